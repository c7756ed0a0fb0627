"""Tiny VILA checkpoints in the original layout, for tests: the top ``config.json`` as
``LlavaLlamaConfig`` writes it (``model_type`` "llava_llama"), and the three subfolders VILA's
``save_pretrained`` writes — ``llm/`` (config, weights without the ``llm.`` prefix, tokenizer),
``vision_tower/`` (SigLIP config, weights without ``vision_tower.vision_tower.``, image processor),
``mm_projector/`` (``v2l_projector`` config, ``layers.*`` weights).

The weights come from the original code's tiny model (../shared/reference/vila: ``model.state_dict()``).
The tokenizer is a byte-level one whose ids are the oracle's stand-in's (1 + byte; ``<image>`` 500,
``<vila/video>`` 501), with ChatML specials and Qwen2's chat template."""

from __future__ import annotations

import json
from pathlib import Path

IMAGE_ID, VIDEO_ID = 500, 501
SPECIALS = {0: "<|endoftext|>", 257: "<|im_start|>", 258: "<|im_end|>", IMAGE_ID: "<image>", VIDEO_ID: "<vila/video>"}
CHATML = ("{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
          "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
          "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")
PREFIXES = {"llm": "llm.", "vision_tower": "vision_tower.vision_tower.", "mm_projector": "mm_projector."}


def byte_unicode() -> dict[int, str]:
    """GPT-2's byte → printable character table (what the ByteLevel pre-tokenizer emits)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return chars


def byte_tokenizer(vocab_size: int = 512):
    """Bytes at 1 + byte, the specials at their ids, unused fillers between (never produced)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {c: 1 + b for b, c in byte_unicode().items()}
    vocab.update({tok: i for i, tok in SPECIALS.items()})
    taken = set(vocab.values())
    vocab.update({f"<unused_{i}>": i for i in range(max(taken) + 1) if i not in taken})
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIALS.values()])
    assert len(vocab) <= vocab_size
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                   chat_template=CHATML)


def save_part(out: Path, state_dict: dict, prefix: str) -> None:
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {k[len(prefix):]: v.detach().contiguous().clone() for k, v in state_dict.items() if k.startswith(prefix)}
    save_file(tensors, str(out / "model.safetensors"))


def top_config(llm_config, tower_config, projector: str, image_aspect_ratio: str | None, select_layer: int) -> dict:
    return {
        "architectures": ["LlavaLlamaModel"], "model_type": "llava_llama", "_name_or_path": ".", "resume_path": ".",
        "llm_cfg": llm_config.to_dict(), "vision_tower_cfg": tower_config.to_dict(),
        "mm_projector_cfg": {"architectures": ["MultimodalProjector"], "model_type": "v2l_projector",
                             "mm_projector_type": projector},
        "hidden_size": llm_config.hidden_size, "mm_hidden_size": tower_config.hidden_size,
        "image_aspect_ratio": image_aspect_ratio, "mm_vision_select_layer": select_layer,
        "mm_vision_select_feature": "cls_patch", "model_dtype": "torch.float32", "s2": False, "dynamic_s2": False,
        "ps3": False, "mm_use_im_start_end": False, "mm_use_im_patch_token": False, "num_video_frames": 8,
        "image_encoder": '{"_target_": "llava.model.encoders.BasicImageEncoder"}',
        "video_encoder": '{"_target_": "llava.model.encoders.BasicVideoEncoder"}',
    }


def make_tiny_vila(out_dir: str | Path, state_dict: dict, llm_config, tower_config, image_processor,
                   projector: str = "mlp_downsample", image_aspect_ratio: str | None = "resize",
                   select_layer: int = -2) -> Path:
    """Write the checkpoint folder; ``llm_config`` / ``tower_config``: the oracle's transformers configs."""
    out = Path(out_dir)
    for name, prefix in PREFIXES.items():
        save_part(out / name, state_dict, prefix)
    llm_config.architectures = [llm_config.architectures[0] if llm_config.architectures else
                                {"qwen2": "Qwen2ForCausalLM", "llama": "LlamaForCausalLM"}[llm_config.model_type]]
    llm_config.save_pretrained(out / "llm")
    byte_tokenizer(llm_config.vocab_size).save_pretrained(out / "llm")
    tower_config.save_pretrained(out / "vision_tower")
    image_processor.save_pretrained(out / "vision_tower")
    (out / "mm_projector" / "config.json").write_text(json.dumps(
        {"architectures": ["MultimodalProjector"], "model_type": "v2l_projector", "mm_projector_type": projector}))
    config = top_config(llm_config, tower_config, projector, image_aspect_ratio, select_layer)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out
