"""Qwen-VL's ``config.json`` (``model_type: "qwen"`` with a ``visual`` block), read without its
remote ``configuration_qwen.py``: every field the architecture needs, checked with errors that say
which value is wrong."""

from __future__ import annotations

from dataclasses import dataclass


class QwenVLConfigError(ValueError):
    pass


@dataclass(frozen=True)
class VisualConfig:
    image_size: int  # 448: the one square input size
    patch_size: int
    width: int
    layers: int
    heads: int
    mlp_ratio: float
    n_queries: int  # the resampler's learned queries (256): image tokens per picture
    output_dim: int  # == the LLM's hidden size
    image_start_id: int  # <img>; </img> is +1 and <imgpad> +2

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def query_grid(self) -> int:
        return int(round(self.n_queries ** 0.5))


@dataclass(frozen=True)
class QwenVLConfig:
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    kv_channels: int
    intermediate_size: int  # w1 and w2 are intermediate_size // 2 wide
    layer_norm_epsilon: float
    rotary_emb_base: float
    rotary_pct: float
    seq_length: int  # the trained context: dynamic NTK and log-n scaling start above it
    max_position_embeddings: int
    use_dynamic_ntk: bool
    use_logn_attn: bool
    no_bias: bool
    visual: VisualConfig

    @property
    def rotary_dim(self) -> int:
        return self.kv_channels if self.rotary_pct == 1.0 else int(self.kv_channels * self.rotary_pct)


def _need(config: dict, key: str, kind, where: str = "config.json"):
    value = config.get(key)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise QwenVLConfigError(f"{where} needs {key!r} as {kind.__name__}, got {value!r}; is this a Qwen-VL checkpoint?")
    return value


def parse_config(config: dict) -> QwenVLConfig:
    visual = config.get("visual")
    if not isinstance(visual, dict):
        raise QwenVLConfigError("config.json has model_type 'qwen' but no 'visual' block: this is the text-only "
                                "Qwen (v1) LLM, not Qwen-VL; vlmforge exports vision-language models")
    v = VisualConfig(
        image_size=_need(visual, "image_size", int, "config.json 'visual'"),
        patch_size=_need(visual, "patch_size", int, "config.json 'visual'"),
        width=_need(visual, "width", int, "config.json 'visual'"),
        layers=_need(visual, "layers", int, "config.json 'visual'"),
        heads=_need(visual, "heads", int, "config.json 'visual'"),
        mlp_ratio=_need(visual, "mlp_ratio", float, "config.json 'visual'"),
        n_queries=int(visual.get("n_queries", 256)),
        output_dim=int(visual.get("output_dim", 512)),
        image_start_id=_need(visual, "image_start_id", int, "config.json 'visual'"),
    )
    c = QwenVLConfig(
        vocab_size=_need(config, "vocab_size", int),
        hidden_size=_need(config, "hidden_size", int),
        num_layers=_need(config, "num_hidden_layers", int),
        num_heads=_need(config, "num_attention_heads", int),
        kv_channels=_need(config, "kv_channels", int),
        intermediate_size=_need(config, "intermediate_size", int),
        layer_norm_epsilon=float(config.get("layer_norm_epsilon", 1e-6)),
        rotary_emb_base=float(config.get("rotary_emb_base", 10000)),
        rotary_pct=float(config.get("rotary_pct", 1.0)),
        seq_length=_need(config, "seq_length", int),
        max_position_embeddings=int(config.get("max_position_embeddings", 8192)),
        use_dynamic_ntk=bool(config.get("use_dynamic_ntk", True)),
        use_logn_attn=bool(config.get("use_logn_attn", True)),
        no_bias=bool(config.get("no_bias", True)),
        visual=v,
    )
    _check(c)
    return c


def _check(c: QwenVLConfig) -> None:
    v = c.visual
    problems = []
    if c.kv_channels * c.num_heads != c.hidden_size:
        problems.append(f"kv_channels × num_attention_heads ({c.kv_channels}×{c.num_heads}) must equal hidden_size {c.hidden_size}")
    if v.output_dim != c.hidden_size:
        problems.append(f"visual.output_dim {v.output_dim} must equal hidden_size {c.hidden_size} (features go into the LLM)")
    if v.output_dim % 128:
        problems.append(f"visual.output_dim {v.output_dim} must be a multiple of 128 (the resampler has output_dim/128 heads)")
    if v.query_grid ** 2 != v.n_queries:
        problems.append(f"visual.n_queries {v.n_queries} must be a square (the queries' 2-D positions)")
    if v.image_size % v.patch_size or v.width % v.heads:
        problems.append(f"visual.image_size {v.image_size} must be a multiple of patch_size {v.patch_size} and width "
                        f"{v.width} of heads {v.heads}")
    if not v.image_start_id + 2 < c.vocab_size:
        problems.append(f"visual.image_start_id {v.image_start_id} + 2 (<imgpad>) must be below vocab_size {c.vocab_size}")
    if c.rotary_dim % 2 or c.rotary_dim < 4:
        problems.append(f"the rotary dimension {c.rotary_dim} (kv_channels × rotary_pct) must be even and at least 4")
    if problems:
        raise QwenVLConfigError("config.json does not describe a Qwen-VL model vlmforge can build: " + "; ".join(problems))
