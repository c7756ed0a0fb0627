"""Export-time wrapper modules: each turns a piece of a Hugging Face model into a graph with
flat tensor inputs and outputs, named as the manifest declares them.

These are generic over architectures; a family folder picks the submodules and options.
"""

from __future__ import annotations

import inspect

import torch
from torch import nn


class VisionFeatures(nn.Module):
    """pixel_values (tiles, 3, H, W) → image_features (tiles, patches, width·len(layers)).

    Runs the tower only up to the deepest layer it needs (later layers cannot change the
    selected hidden states), then picks and concatenates ``feature_layers`` and drops the CLS
    position when ``drop_cls``. Matches ``LlavaModel.get_image_features`` before the projector.
    """

    def __init__(self, vision_tower: nn.Module, feature_layers: list[int], drop_cls: bool):
        super().__init__()
        encoder_layers = _encoder_layers(vision_tower)
        num_states = len(encoder_layers) + 1  # hidden_states[0] is the embedding output
        absolute = [layer % num_states for layer in feature_layers]
        # hidden_states are captured at the layers, so keep at least one even for the embedding output
        keep = max(max(absolute), 1)
        if keep < len(encoder_layers):
            del encoder_layers[keep:]
        self.vision_tower = vision_tower
        self.feature_layers = absolute
        self.drop_cls = drop_cls

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.vision_tower(pixel_values, output_hidden_states=True, return_dict=True)
        states = [out.hidden_states[i] for i in self.feature_layers]
        if self.drop_cls:
            states = [s[:, 1:] for s in states]
        return states[0] if len(states) == 1 else torch.cat(states, dim=-1)


class VisionLastHidden(nn.Module):
    """pixel_values (tiles, 3, H, W) → the tower's last_hidden_state (tiles, 1 + patches, width)
    (post-layernorm included where the tower has one, as BLIP / BLIP-2 read it)."""

    def __init__(self, vision_model: nn.Module):
        super().__init__()
        self.vision_model = vision_model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixel_values=pixel_values, return_dict=True).last_hidden_state


def _encoder_layers(vision_tower: nn.Module) -> nn.ModuleList:
    for path in ("vision_model.encoder.layers", "encoder.layers"):
        module = vision_tower
        try:
            for name in path.split("."):
                module = getattr(module, name)
        except AttributeError:
            continue
        return module
    raise ValueError(f"cannot find the encoder layers of {type(vision_tower).__name__}")


class Connector(nn.Module):
    """image_features (tiles, patches, d_vision) → image_embeds (tiles, patches, d_model)."""

    def __init__(self, projector: nn.Module):
        super().__init__()
        self.projector = projector

    def forward(self, image_features: torch.Tensor) -> torch.Tensor:
        return self.projector(image_features)


class DecoderWithCache(nn.Module):
    """One step of a decoder-only LM with an explicit KV cache.

    inputs:  inputs_embeds (b, s, d), attention_mask (b, past+s) int64, position_ids (b, s) int64,
             past_key_values.{i}.key / .value (b, kv_heads, past, head_dim)
    outputs: logits (b, 1, vocab) — last position only: logits for every prompt token would be
             s×vocab floats nobody reads — and present.{i}.key / .value (b, kv_heads, past+s, head_dim)

    The 4-D additive mask (causal within the new tokens, padding from ``attention_mask``) is
    built here with plain ops, so the exported graph has no dependence on transformers' mask
    utilities; the text model takes a 4-D mask as is.
    """

    cache_from_config = True
    # "append" (export/append_cache.py): outputs new.{i}.* (b, kv_heads, s, head_dim), the new tokens'
    # keys/values only, instead of present.*; decoder_graph switches it on where the layers allow
    cache_layout = "concat"

    @property
    def append_ok(self) -> bool:
        """Whether the append layout can express this graph: the mask may hide capacity columns the
        runtime leaves between the cache and the new tokens (windows measured in columns cannot)."""
        return True

    def __init__(self, language_model: nn.Module, lm_head: nn.Module, num_layers: int):
        super().__init__()
        self.language_model = language_model
        self.lm_head = lm_head
        self.num_layers = num_layers
        # transformers ≥5.2x names the argument ``cache``; earlier releases ``past_key_values``
        params = inspect.signature(language_model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"

    def forward(self, inputs_embeds, attention_mask, position_ids, *past):
        return self.step(inputs_embeds, attention_mask, position_ids, past)

    def step(self, inputs_embeds, attention_mask, position_ids, past, mask=None, **extra):
        """``extra``: further keyword inputs of the text model (Qwen3-VL's DeepStack features);
        ``mask``: a (b, 1, s, past+s) additive mask instead of the causal one (export/attention.py)."""
        if mask is None:
            mask = additive_causal_mask(attention_mask, inputs_embeds.shape[1], inputs_embeds.dtype)
        if self.cache_layout == "append":
            from .append_cache import append_cache, appending

            cache = append_cache(past, self.num_layers)
            with appending(cache):
                out = self._run(inputs_embeds, mask, position_ids, cache, extra)
            self.append_calls = cache.calls  # decoder_graph checks every layer appended
            return (self._logits(out), *(t for pair in cache.new for t in pair))
        from transformers.cache_utils import DynamicCache

        # with a config, transformers gives sliding-window layers a cache trimmed to the window; a graph
        # that masks the window itself (export/attention.py) keeps every key instead
        cache = DynamicCache(config=self.language_model.config) if self.cache_from_config else DynamicCache()
        for i in range(self.num_layers):
            cache.update(past[2 * i], past[2 * i + 1], i)
        out = self._run(inputs_embeds, mask, position_ids, cache, extra)
        presents = []
        for layer in cache.layers[: self.num_layers]:  # updated in place with the new keys/values
            presents += [layer.keys, layer.values]
        return (self._logits(out), *presents)

    def _run(self, inputs_embeds, mask, position_ids, cache, extra):
        return self.language_model(inputs_embeds=inputs_embeds, attention_mask=mask, position_ids=position_ids,
                                   use_cache=True, return_dict=True, **{self.cache_arg: cache}, **extra)

    def _logits(self, out):
        return self.lm_head(out.last_hidden_state[:, -1:, :])


def additive_causal_mask(attention_mask: torch.Tensor, seq_len: int, dtype: torch.dtype) -> torch.Tensor:
    """(b, total) 0/1 mask → (b, 1, seq, total) additive mask; the new tokens are the last ``seq``."""
    total = attention_mask.shape[1]
    past = total - seq_len
    query_pos = torch.arange(seq_len, device=attention_mask.device).unsqueeze(1) + past  # (seq, 1)
    key_pos = torch.arange(total, device=attention_mask.device).unsqueeze(0)  # (1, total)
    allowed = (key_pos <= query_pos).unsqueeze(0) & attention_mask.bool().unsqueeze(1)  # (b, seq, total)
    neg = torch.finfo(dtype).min
    zero = torch.zeros((), dtype=dtype, device=attention_mask.device)
    return torch.where(allowed, zero, torch.full((), neg, dtype=dtype)).unsqueeze(1)
