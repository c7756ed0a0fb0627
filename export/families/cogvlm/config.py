"""CogVLM's ``config.json`` (v1 ``cogvlm-chat-hf``, CogVLM2 ``cogvlm2-llama3-chat``), read without
the checkpoint's remote ``configuration_cogvlm.py``: every field the architecture needs, checked with
errors that say which value is wrong.

The vision block is spelled two ways: the original checkpoints write ``num_heads`` /
``in_channels`` / ``num_positions``, the transformers port of v1 ``num_attention_heads`` /
``num_channels``; both are read. CogVLM2 is told apart by ``num_multi_query_heads`` (its GQA):
its tower adds the 2×2 stride-2 convolution and its rotary base is 500000 (hard-wired upstream).
"""

from __future__ import annotations

from dataclasses import dataclass

TEMPLATES = ("base", "chat", "vqa")


class CogVLMConfigError(ValueError):
    pass


@dataclass(frozen=True)
class VisionConfig:
    image_size: int  # the one square input size (490 v1, 1344 v2)
    patch_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    layer_norm_eps: float
    in_channels: int
    hidden_act: str

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_positions(self) -> int:
        return self.grid ** 2 + 1  # cls + patches


@dataclass(frozen=True)
class CogVLMConfig:
    version: int  # 1 or 2
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int  # v2: num_multi_query_heads; v1: num_heads (MHA)
    rms_norm_eps: float
    rope_base: float
    max_position_embeddings: int
    template_version: str
    bos_token_id: int
    eos_token_ids: tuple[int, ...]
    pad_token_id: int
    vision: VisionConfig

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def downsample(self) -> int:
        """The connector's spatial stride: v2's 2×2 convolution."""
        return 2 if self.version == 2 else 1

    @property
    def image_tokens(self) -> int:
        """Slots per picture: boi + (grid / downsample)² patches + eoi."""
        return (self.vision.grid // self.downsample) ** 2 + 2


def _need(config: dict, keys: tuple[str, ...], kind, where: str = "config.json"):
    for key in keys:
        if key in config:
            value = config[key]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if isinstance(value, kind) and not isinstance(value, bool):
                return value
            raise CogVLMConfigError(f"{where} needs {key!r} as {kind.__name__}, got {value!r}")
    raise CogVLMConfigError(f"{where} has no {' / '.join(repr(k) for k in keys)}; is this a CogVLM checkpoint?")


def parse_vision(v: dict) -> VisionConfig:
    where = "config.json 'vision_config'"
    c = VisionConfig(
        image_size=_need(v, ("image_size",), int, where),
        patch_size=_need(v, ("patch_size",), int, where),
        hidden_size=_need(v, ("hidden_size",), int, where),
        intermediate_size=_need(v, ("intermediate_size",), int, where),
        num_layers=_need(v, ("num_hidden_layers",), int, where),
        num_heads=_need(v, ("num_heads", "num_attention_heads"), int, where),
        layer_norm_eps=float(v.get("layer_norm_eps", 1e-6)),
        in_channels=int(v.get("in_channels", v.get("num_channels", 3))),
        hidden_act=str(v.get("hidden_act", "gelu")),
    )
    declared = v.get("num_positions")
    if declared is not None and declared != c.num_positions:
        raise CogVLMConfigError(f"{where} num_positions {declared} must be (image_size / patch_size)² + 1 = "
                                f"{c.num_positions}")
    return c


def _ids(value) -> tuple[int, ...]:
    return tuple(int(i) for i in (value if isinstance(value, list) else [value]) if i is not None)


def parse_config(config: dict, templates: tuple[str, ...] = TEMPLATES) -> CogVLMConfig:
    """``templates``: the template_version values this family's chat formats know."""
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        raise CogVLMConfigError("config.json has no 'vision_config' block; CogVLM checkpoints describe their "
                                "EVA2-CLIP tower there")
    heads = _need(config, ("num_attention_heads",), int)
    version = 2 if "num_multi_query_heads" in config else 1
    c = CogVLMConfig(
        version=version,
        vocab_size=_need(config, ("vocab_size",), int),
        hidden_size=_need(config, ("hidden_size",), int),
        intermediate_size=_need(config, ("intermediate_size",), int),
        num_layers=_need(config, ("num_hidden_layers",), int),
        num_heads=heads,
        num_kv_heads=_need(config, ("num_multi_query_heads",), int) if version == 2 else heads,
        rms_norm_eps=float(config.get("rms_norm_eps", 1e-5)),
        rope_base=500000.0 if version == 2 else 10000.0,
        max_position_embeddings=int(config.get("max_position_embeddings", 8192 if version == 2 else 2048)),
        template_version=str(config.get("template_version", "chat")),
        bos_token_id=int(config.get("bos_token_id", 128000 if version == 2 else 1)),
        eos_token_ids=_ids(config.get("eos_token_id", 128001 if version == 2 else 2)),
        pad_token_id=int(config.get("pad_token_id") or (128002 if version == 2 else 0)),
        vision=parse_vision(vision),
    )
    _check(c, config, templates)
    return c


def _check(c: CogVLMConfig, raw: dict, templates: tuple[str, ...]) -> None:
    v, problems = c.vision, []
    if c.hidden_size % c.num_heads or c.head_dim % 2:
        problems.append(f"hidden_size {c.hidden_size} must split into {c.num_heads} heads of an even width (RoPE)")
    if c.num_heads % c.num_kv_heads:
        problems.append(f"num_attention_heads {c.num_heads} must be a multiple of num_multi_query_heads {c.num_kv_heads}")
    if v.image_size % v.patch_size or v.hidden_size % v.num_heads:
        problems.append(f"vision image_size {v.image_size} must be a multiple of patch_size {v.patch_size} and "
                        f"hidden_size {v.hidden_size} of num_heads {v.num_heads}")
    if c.version == 2 and v.grid % 2:
        problems.append(f"CogVLM2's 2×2 stride-2 convolution needs an even patch grid; image_size / patch_size is {v.grid}")
    if v.hidden_act not in ("gelu",):
        problems.append(f"vision hidden_act {v.hidden_act!r}: EVA2-CLIP uses 'gelu'")
    if raw.get("hidden_act", "silu") != "silu":
        problems.append(f"hidden_act {raw.get('hidden_act')!r}: the CogVLM decoder's MLP is SiLU-gated")
    if c.template_version not in templates:
        problems.append(f"template_version {c.template_version!r} is not one of {templates}")
    if problems:
        raise CogVLMConfigError("config.json does not describe a CogVLM model vlmforge can build: " + "; ".join(problems))
