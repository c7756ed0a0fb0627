"""InternLM-XComposer2's ``config.json`` (``model_type`` "internlmxcomposer2", or "internlm2" as the
remote ``configuration_internlm_xcomposer2.py`` names itself), read without that file: every field
the decoder needs, checked with errors that say which value is wrong."""

from __future__ import annotations

from dataclasses import dataclass

ARCHITECTURE = "InternLMXComposer2ForCausalLM"
ROPE_TYPES = ("default", "linear", "dynamic")
PROMPT_CAP = 16384  # interleav_wrap_chat's max_length: the prompt is cut there


class XComposer2ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class XComposer2Config:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    rms_norm_eps: float
    bias: bool  # wqkv and wo carry biases (the config class's default)
    rope_theta: float
    rope_type: str  # default | linear | dynamic
    rope_factor: float
    max_position_embeddings: int
    tie_word_embeddings: bool
    hd_num: int | None  # config.json's; None: the variant's chat() default (variants.py)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def groups(self) -> int:
        """Query heads per KV head: wqkv's output is (kv_heads, groups + 2, head_dim) interleaved."""
        return self.num_heads // self.num_kv_heads

    @property
    def max_context(self) -> int:
        """Dynamic NTK changes the rotary base past max_position_embeddings as the sequence grows
        (this export does not), so the context stops there; plain and linear RoPE have no bound but
        the original's prompt cap."""
        if self.rope_type == "dynamic":
            return self.max_position_embeddings
        return max(self.max_position_embeddings, PROMPT_CAP)


def _need(config: dict, key: str, kind, default=None):
    value = config.get(key, default)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise XComposer2ConfigError(f"config.json needs {key!r} as {kind.__name__}, got {value!r}; is this an "
                                    "InternLM-XComposer2 checkpoint?")
    return value


def _rope(config: dict) -> tuple[str, float, float]:
    """(type, factor, theta) from rope_scaling (the original's {"type", "factor"}) or transformers 5's
    rope_parameters."""
    theta = float(_need(config, "rope_theta", float, 10000.0))
    rope = config.get("rope_scaling") or config.get("rope_parameters") or {}
    if not isinstance(rope, dict):
        raise XComposer2ConfigError(f"config.json rope_scaling must be null or {{'type', 'factor'}}, got {rope!r}")
    kind = rope.get("type", rope.get("rope_type", "default"))
    factor = float(rope.get("factor", 1.0))
    if kind not in ROPE_TYPES or factor < 1.0:
        raise XComposer2ConfigError(f"config.json rope_scaling {rope!r}: the type must be one of {ROPE_TYPES} and the "
                                    "factor at least 1 (what the original's InternLM2 attention supports)")
    return kind, factor, float(rope.get("rope_theta", theta))


def check_architecture(config: dict) -> None:
    archs = config.get("architectures") or []
    if archs and ARCHITECTURE not in archs:
        raise XComposer2ConfigError(
            f"config.json names {archs}, not {ARCHITECTURE}: a plain InternLM2 LLM has no vision tower — vlmforge "
            "exports the vision-language InternLM-XComposer2 (its checkpoint's config.json names that class)")


def parse_config(config: dict) -> XComposer2Config:
    check_architecture(config)
    heads = _need(config, "num_attention_heads", int)
    kind, factor, theta = _rope(config)
    c = XComposer2Config(
        vocab_size=_need(config, "vocab_size", int),
        hidden_size=_need(config, "hidden_size", int),
        intermediate_size=_need(config, "intermediate_size", int),
        num_layers=_need(config, "num_hidden_layers", int),
        num_heads=heads,
        num_kv_heads=heads if config.get("num_key_value_heads") is None else _need(config, "num_key_value_heads", int),
        rms_norm_eps=float(_need(config, "rms_norm_eps", float, 1e-6)),
        bias=_need(config, "bias", bool, True),
        rope_theta=theta,
        rope_type=kind,
        rope_factor=factor,
        max_position_embeddings=_need(config, "max_position_embeddings", int, 2048),
        tie_word_embeddings=_need(config, "tie_word_embeddings", bool, False),
        hd_num=None if config.get("hd_num") is None else _need(config, "hd_num", int),
    )
    _check(c)
    return c


def _check(c: XComposer2Config) -> None:
    problems = []
    if c.hidden_size % c.num_heads:
        problems.append(f"hidden_size {c.hidden_size} must be a multiple of num_attention_heads {c.num_heads}")
    if c.num_heads % c.num_kv_heads:
        problems.append(f"num_attention_heads {c.num_heads} must be a multiple of num_key_value_heads {c.num_kv_heads}")
    if (c.hidden_size // c.num_heads) % 2:
        problems.append(f"the head size {c.hidden_size // c.num_heads} must be even (rotary halves)")
    if c.hd_num is not None and c.hd_num < 1:
        problems.append(f"hd_num {c.hd_num} must be at least 1 (local tiles per picture)")
    if min(c.vocab_size, c.intermediate_size, c.num_layers) < 1:
        problems.append("vocab_size, intermediate_size and num_hidden_layers must be positive")
    if problems:
        raise XComposer2ConfigError("config.json does not describe an InternLM-XComposer2 model vlmforge can build: "
                                    + "; ".join(problems))
