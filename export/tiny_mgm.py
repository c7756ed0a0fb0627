"""Tiny Mini-Gemini checkpoints in the original layout, for tests: ``config.json`` as
``MGMConfig.to_dict()`` writes it (``model_type`` "mgm"), ``model.safetensors`` with the original
model's whole ``state_dict`` (what MGM's trainer saves), and the two tower folders the config
names — ``openai-clip-vit-tiny/`` (a transformers CLIP folder) and
``openclip-convnext-large-d-320-tiny/`` (``open_clip_config.json`` + ``open_clip_pytorch_model.bin``
with ``visual.trunk.*`` names) — holding the same tower weights.

The weights come from the original code's tiny model (../shared/reference/mgm). The tokenizer is a
byte-level one (``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, byte b at 3 + b) that puts ``<s>`` first, as
Llama's does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

CLIP_DIR, AUX_DIR = "openai-clip-vit-tiny", "openclip-convnext-large-d-320-tiny"
SPECIALS = {0: "<unk>", 1: "<s>", 2: "</s>"}


def byte_tokenizer():
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    from .tiny_vila import byte_unicode

    vocab = {c: 3 + b for b, c in byte_unicode().items()}
    vocab.update({tok: i for i, tok in SPECIALS.items()})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS.values()])
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def save_clip(out: Path, state_dict: dict, source_dir: Path) -> None:
    """The CLIP tower folder: the oracle's config and image processor, the model's tower weights."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    for name in ("config.json", "preprocessor_config.json"):
        shutil.copy(source_dir / name, out / name)
    prefix = "model.vision_tower.vision_tower."
    save_file({k[len(prefix):]: v.contiguous().clone() for k, v in state_dict.items() if k.startswith(prefix)},
              str(out / "model.safetensors"))


def save_aux(out: Path, state_dict: dict, source_dir: Path) -> None:
    """The open_clip folder: its config and a state-dict pickle of ``visual.trunk.{stem,stages}``."""
    import torch

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(source_dir / "open_clip_config.json", out / "open_clip_config.json")
    prefix = "model.vision_tower_aux.vision_"
    trunk = {"visual.trunk." + k[len(prefix):]: v.contiguous().clone() for k, v in state_dict.items()
             if k.startswith(prefix)}
    torch.save(trunk, out / "open_clip_pytorch_model.bin")


def make_tiny_mgm(out_dir: str | Path, state_dict: dict, config, image_aspect_ratio: str | None = None) -> Path:
    """Write the checkpoint folder; ``config``: the oracle model's MGMConfig (its tower paths are read)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_clip(out / CLIP_DIR, state_dict, Path(config.mm_vision_tower))
    save_aux(out / AUX_DIR, state_dict, Path(config.mm_vision_tower_aux))
    save_file({k: v.contiguous().clone() for k, v in state_dict.items()}, str(out / "model.safetensors"))
    raw = config.to_dict()
    raw.pop("model_path", None)
    raw.update(architectures=["MGMLlamaForCausalLM"], model_type="mgm", mm_vision_tower=CLIP_DIR,
               mm_vision_tower_aux=AUX_DIR, image_aspect_ratio=image_aspect_ratio, bos_token_id=1, eos_token_id=2)
    (out / "config.json").write_text(json.dumps(raw, indent=2))
    byte_tokenizer().save_pretrained(out)
    return out
