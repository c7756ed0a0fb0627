"""Tiny InternLM-XComposer (v1) checkpoints in the original layout, for tests: ``config.json`` as the
hub writes it (``model_type`` "InternLMXComposer", the remote classes in ``auto_map``), seeded random
weights under the published names (``visual_encoder.*`` with EVA's q_bias / v_bias, ``ln_vision.*``,
``query_tokens``, ``Qformer.bert.*`` without the text FFN, ``internlm_proj.*``, the two flags,
``internlm_model.model.*`` with the rotary ``inv_freq`` buffers, ``internlm_model.lm_head.*``) and a
small SentencePiece BPE ``tokenizer.model`` with eoh / eoa as user-defined pieces.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import torch

CORPUS = ["user bot image picture describe what is in the picture", "the star is orange and small",
          "What is it? Describe the image in detail.", "a red circle left of a blue square above a green triangle",
          "0 1 2 3 4 5 6 7 8 9 , . ? ! : ; ( ) - _ / ' \" < > [ ] { } + = * & % $ # @ |"]
EOH, EOA = "<TOKENS_UNUSED_0>", "<TOKENS_UNUSED_1>"
AUTO_MAP = {"AutoConfig": "configuration_InternLM_XComposer.InternLMXComposerConfig",
            "AutoModel": "modeling_InternLM_XComposer.InternLMXComposerForCausalLM",
            "AutoModelForCausalLM": "modeling_InternLM_XComposer.InternLMXComposerForCausalLM"}


@dataclass
class TinyDims:
    vision_width: int = 64  # 16 heads (create_eva_vit_g's), 4 wide
    vision_layers: int = 2
    image_size: int = 56
    patch_size: int = 14
    qformer_width: int = 128  # BERT's 64-wide heads: 2
    qformer_layers: int = 2  # cross-attention in layer 0 (every other from the first)
    num_query_token: int = 8
    hidden_size: int = 64
    intermediate_size: int = 128
    num_hidden_layers: int = 2
    num_attention_heads: int = 4
    kqvo_bias: bool = True


def train_tokenizer(path: Path, vocab_size: int = 400) -> None:
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 4), model_writer=buf, vocab_size=vocab_size,
                                   model_type="bpe", user_defined_symbols=[EOH, EOA], byte_fallback=True,
                                   character_coverage=1.0, num_threads=1, minloglevel=2, unk_id=0, bos_id=1, eos_id=2,
                                   pad_id=-1)
    path.write_bytes(buf.getvalue())


def _vision(d: TinyDims, t) -> dict:
    w, grid = d.vision_width, d.image_size // d.patch_size
    out = {"visual_encoder.cls_token": t(1, 1, w), "visual_encoder.pos_embed": t(1, 1 + grid * grid, w),
           "visual_encoder.patch_embed.proj.weight": t(w, 3, d.patch_size, d.patch_size),
           "visual_encoder.patch_embed.proj.bias": t(w),
           "ln_vision.weight": 1 + t(w), "ln_vision.bias": t(w)}
    for i in range(d.vision_layers):
        b = f"visual_encoder.blocks.{i}."
        out.update({b + "norm1.weight": 1 + t(w), b + "norm1.bias": t(w), b + "attn.qkv.weight": t(3 * w, w),
                    b + "attn.q_bias": t(w), b + "attn.v_bias": t(w), b + "attn.proj.weight": t(w, w),
                    b + "attn.proj.bias": t(w), b + "norm2.weight": 1 + t(w), b + "norm2.bias": t(w),
                    b + "mlp.fc1.weight": t(4 * w, w), b + "mlp.fc1.bias": t(4 * w), b + "mlp.fc2.weight": t(w, 4 * w),
                    b + "mlp.fc2.bias": t(w)})
    return out


def _qformer(d: TinyDims, t) -> dict:
    h, w = d.qformer_width, d.vision_width
    out = {"query_tokens": t(1, d.num_query_token, h), "Qformer.bert.embeddings.LayerNorm.weight": 1 + t(h),
           "Qformer.bert.embeddings.LayerNorm.bias": t(h)}
    for i in range(d.qformer_layers):
        b = f"Qformer.bert.encoder.layer.{i}."
        kinds = ("attention",) + (("crossattention",) if i % 2 == 0 else ())
        for kind in kinds:
            src = h if kind == "attention" else w
            for name, shape in (("self.query", (h, h)), ("self.key", (h, src)), ("self.value", (h, src)),
                                ("output.dense", (h, h))):
                out[f"{b}{kind}.{name}.weight"], out[f"{b}{kind}.{name}.bias"] = t(*shape), t(shape[0])
            out[f"{b}{kind}.output.LayerNorm.weight"], out[f"{b}{kind}.output.LayerNorm.bias"] = 1 + t(h), t(h)
        out.update({b + "intermediate_query.dense.weight": t(2 * h, h), b + "intermediate_query.dense.bias": t(2 * h),
                    b + "output_query.dense.weight": t(h, 2 * h), b + "output_query.dense.bias": t(h),
                    b + "output_query.LayerNorm.weight": 1 + t(h), b + "output_query.LayerNorm.bias": t(h)})
    return out


def _llm(d: TinyDims, vocab: int, t) -> dict:
    h, m = d.hidden_size, d.intermediate_size
    head = h // d.num_attention_heads
    out = {"internlm_model.model.embed_tokens.weight": t(vocab, h), "internlm_model.model.norm.weight": 1 + t(h),
           "internlm_model.lm_head.weight": t(vocab, h)}
    inv_freq = 1.0 / (10000 ** (torch.arange(0, head, 2).float() / head))
    for i in range(d.num_hidden_layers):
        b = f"internlm_model.model.layers.{i}."
        for p in "qkvo":
            out[f"{b}self_attn.{p}_proj.weight"] = t(h, h) * (3.0 if p in "qk" else 1.0)  # sharper attention
            if d.kqvo_bias:
                out[f"{b}self_attn.{p}_proj.bias"] = t(h)
        out.update({b + "self_attn.rotary_emb.inv_freq": inv_freq.clone(), b + "mlp.gate_proj.weight": t(m, h),
                    b + "mlp.up_proj.weight": t(m, h), b + "mlp.down_proj.weight": t(h, m),
                    b + "input_layernorm.weight": 1 + t(h), b + "post_attention_layernorm.weight": 1 + t(h)})
    return out


def tiny_state(d: TinyDims, vocab: int, seed: int) -> dict[str, torch.Tensor]:
    """Every tensor of the original layout, seeded; matrices ~ N(0, 1/fan_in), vectors ~ N(0, 0.1²)."""
    g = torch.Generator().manual_seed(seed)

    def t(*shape):
        std = shape[-1] ** -0.5 if len(shape) > 1 else 0.1
        return torch.randn(*shape, generator=g) * std

    state = {**_vision(d, t), **_qformer(d, t), **_llm(d, vocab, t)}
    state["internlm_proj.weight"], state["internlm_proj.bias"] = t(d.hidden_size, d.qformer_width), t(d.hidden_size)
    state["flag_image_start"], state["flag_image_end"] = t(1, 1, d.hidden_size) * 10, t(1, 1, d.hidden_size) * 10
    return state


def tiny_config(d: TinyDims, vocab: int) -> dict:
    return {"architectures": ["InternLMXComposerForCausalLM"], "model_type": "InternLMXComposer", "auto_map": AUTO_MAP,
            "vocab_size": vocab, "hidden_size": d.hidden_size, "intermediate_size": d.intermediate_size,
            "num_hidden_layers": d.num_hidden_layers, "num_attention_heads": d.num_attention_heads,
            "rms_norm_eps": 1e-6, "max_position_embeddings": 2048, "hidden_act": "silu", "bos_token_id": 1,
            "eos_token_id": 2, "pad_token_id": -1, "num_query_token": d.num_query_token, "intern_converted_llm": True,
            "kqvo_bias": d.kqvo_bias, "internlm_lora": None, "torch_dtype": "float32", "tie_word_embeddings": False}


def make_tiny_internlm_xcomposer(out_dir: str | Path, seed: int = 0, dims: TinyDims | None = None) -> Path:
    """Write a checkpoint folder (weights, config.json, tokenizer.model, tokenizer_config.json)."""
    import sentencepiece as spm
    from safetensors.torch import save_file

    d = dims or TinyDims()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train_tokenizer(out / "tokenizer.model")
    vocab = spm.SentencePieceProcessor(model_file=str(out / "tokenizer.model")).get_piece_size()
    save_file({k: v.contiguous() for k, v in tiny_state(d, vocab, seed).items()}, str(out / "model.safetensors"))
    (out / "config.json").write_text(json.dumps(tiny_config(d, vocab), indent=2))
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "InternLMXComposerTokenizer", "add_bos_token": True, "add_eos_token": False,
        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "auto_map": {"AutoTokenizer": ["tokenization_InternLM_XComposer.InternLMXComposerTokenizer", None]}}))
    return out
