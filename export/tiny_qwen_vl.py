"""Tiny random Qwen-VL checkpoints in the original layout (``config.json`` with ``model_type:
"qwen"`` and a ``visual`` block, ``qwen.tiktoken``, weights by the original names), for tests and
smoke runs. Tests pass the weights of the original code (../shared/reference/qwen-vl); without
them the weights come from our own modules, randomly initialised.

``qwen.tiktoken`` is a small byte-level BPE learned here on the built-in corpus (256 bytes +
``merges`` ranks), so the special tokens sit at len(ranks) + … exactly as in the real file.
"""

from __future__ import annotations

import base64
import collections
import json
from pathlib import Path

from .families.qwen_vl.tokenizer import PATTERN, SPECIALS, special_ids
from .tiny import _CORPUS

QWEN_VL_CORPUS = _CORPUS + [
    "Picture 1:<img>demo.jpg</img>\nWhat is this? A dog on the beach.",
    "<ref>the dog</ref><box>(120,80),(560,900)</box> and <ref>a ball</ref><box>(600,700),(700,800)</box>",
    "Generate the caption in English with grounding: a woman and her dog sit on the sand.",
]


def learn_ranks(merges: int = 160, corpus: list[str] | None = None) -> dict[bytes, int]:
    """Byte-level BPE on the corpus's regex pieces: ranks 0-255 the bytes, then one per merge."""
    import regex

    words = collections.Counter(p.encode("utf-8") for text in (corpus or QWEN_VL_CORPUS) * 2
                                for p in regex.findall(PATTERN, text))
    splits = {w: [bytes([b]) for b in w] for w in words}
    ranks = {bytes([b]): b for b in range(256)}
    while len(ranks) < 256 + merges:
        pairs = collections.Counter()
        for w, parts in splits.items():
            for a, b in zip(parts, parts[1:]):
                pairs[a, b] += words[w]
        best = [pair for pair, n in pairs.most_common() if pair[0] + pair[1] not in ranks][:1]
        if not best:
            break
        a, b = best[0]
        ranks[a + b] = len(ranks)
        for w, parts in splits.items():
            i, out = 0, []
            while i < len(parts):
                if i + 1 < len(parts) and parts[i] == a and parts[i + 1] == b:
                    out.append(a + b)
                    i += 2
                else:
                    out.append(parts[i])
                    i += 1
            splits[w] = out
    return ranks


def write_tiktoken(path: Path, ranks: dict[bytes, int]) -> None:
    path.write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in sorted(ranks.items(), key=lambda x: x[1])))


def tiny_config(num_ranks: int, *, hidden: int = 128, layers: int = 2, heads: int = 4, seq_length: int = 64,
                vision_width: int = 32, vision_layers: int = 2, vision_heads: int = 2, image_size: int = 56,
                n_queries: int = 64, intermediate: int = 256, dynamic_ntk: bool = True, logn: bool = True) -> dict:
    """config.json as the original writes it; vocab padded past the specials as the real one is."""
    vocab = -(-(num_ranks + len(SPECIALS)) // 64) * 64
    return {
        "architectures": ["QWenLMHeadModel"], "model_type": "qwen",
        "auto_map": {"AutoConfig": "configuration_qwen.QWenConfig", "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"},
        "vocab_size": vocab, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
        "kv_channels": hidden // heads, "intermediate_size": intermediate, "layer_norm_epsilon": 1e-6,
        "rotary_emb_base": 10000, "rotary_pct": 1.0, "seq_length": seq_length, "max_position_embeddings": 8192,
        "use_dynamic_ntk": dynamic_ntk, "use_logn_attn": logn, "no_bias": True, "use_flash_attn": False,
        "fp32": True, "bf16": False, "fp16": False, "tie_word_embeddings": False,
        "visual": {"heads": vision_heads, "image_size": image_size, "image_start_id": special_ids(num_ranks)["<img>"],
                   "layers": vision_layers, "mlp_ratio": 2.0, "output_dim": hidden, "patch_size": 14,
                   "width": vision_width, "n_queries": n_queries},
    }


def make_tiny_qwen_vl(out_dir: str | Path, state_dict=None, *, ranks: dict[bytes, int] | None = None,
                      chat: bool = True, **config) -> Path:
    """Write a checkpoint folder; ``state_dict``: original-named tensors (else random ones of our modules)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    ranks = ranks or learn_ranks()
    cfg = tiny_config(len(ranks), **config)
    if state_dict is None:
        state_dict = random_state(cfg)
    save_file({k: v.detach().contiguous().clone() for k, v in state_dict.items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    write_tiktoken(out / "qwen.tiktoken", ranks)
    ids = special_ids(len(ranks))
    (out / "generation_config.json").write_text(json.dumps({
        "chat_format": "chatml" if chat else "raw", "eos_token_id": ids["<|endoftext|>"],
        "pad_token_id": ids["<|endoftext|>"], "max_new_tokens": 512, "do_sample": False}))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "model_max_length": 8192, "tokenizer_class": "QWenTokenizer",
        "auto_map": {"AutoTokenizer": ["tokenization_qwen.QWenTokenizer", None]}}))
    return out


def random_state(cfg: dict) -> dict:
    """Original-named random weights from our own modules (no original code needed)."""
    import torch

    from .families.qwen_vl.config import parse_config
    from .families.qwen_vl.decoder import QwenDecoder
    from .families.qwen_vl.vision import QwenVisual, sincos_2d

    c = parse_config(cfg)
    torch.manual_seed(0)
    visual, decoder = QwenVisual(c.visual), QwenDecoder(c)
    state = {}
    for prefix, module in (("transformer.visual.", visual), ("", decoder)):
        for name, p in module.state_dict().items():
            t = torch.randn_like(p) * 0.2 if not name.endswith(("ln_1.weight", "ln_2.weight")) else torch.ones_like(p)
            key = prefix + name if prefix else ("lm_head.weight" if name == "lm_head.weight" else "transformer." + name)
            state[key] = t
    state["transformer.visual.attn_pool.pos_embed"] = sincos_2d(c.visual.output_dim, c.visual.query_grid)
    state["transformer.wte.weight"] = torch.randn(c.vocab_size, c.hidden_size) * 0.2
    return state
