"""Qwen3-VL's parts beside the line's shared ones: a tower with a learned position grid and
DeepStack outputs, the mergers as the connector, and a decoder that adds the DeepStack features.

Vision (``Qwen3VLVisionModel``): as Qwen2-VL's tower (2-D rotary, one segment per temporal patch)
plus a learned ``pos_embed`` table of ``side²`` positions resampled bilinearly to each patch grid —
the host computes the four taps and weights per patch (``kernels/native.position_grid_taps``) and
the graph gathers and sums them — and the hidden states after the ``deepstack_visual_indexes``
layers as a second output (layers, patches, width).

Connector: the patch merger over the last hidden state and one DeepStack merger per captured
layer (LayerNorm after the 2×2 shuffle) → image_embeds (tokens, d) and deepstack_embeds
(layers, tokens, d).

LLM: transformers adds DeepStack feature i to the image-token positions of the hidden states
after decoder layer i (``_deepstack_process``, a boolean-mask scatter). The graph takes them dense —
``deepstack_embeds`` (layers, batch, seq, d), zero at text tokens — and adds: the same sums
(x + 0 is x), with only batch × sequence dynamic and no data-dependent indexing. The runtime
builds it from the manifest's ``llm.token_inputs`` (runtime/token_inputs.py).
"""

from __future__ import annotations

import torch
from torch import nn

from ...decoder import EXAMPLE_BATCH, EXAMPLE_SEQ, decoder_graph
from ...graphs import DecoderWithCache
from ...onnx_export import GraphExport
from .vision import NativeVision

DEEPSTACK_INPUT = "deepstack_embeds"


class GridVision(NativeVision):
    """pixel_values, rotary_pos_ids, segment_ids, interp_indices (patches, 4), interp_weights
    (patches, 4) → image_features (patches, width) [, deepstack_features (layers, patches, width)]."""

    def __init__(self, visual: nn.Module):
        super().__init__(visual)
        self.capture = tuple(visual.config.deepstack_visual_indexes)

    def forward(self, pixel_values, rotary_pos_ids, segment_ids, interp_indices, interp_weights):
        pos = (self.visual.pos_embed(interp_indices) * interp_weights[:, :, None]).sum(1)  # (patches, width)
        hidden, captured = self.run(pixel_values, rotary_pos_ids, segment_ids, None, pos_embeds=pos,
                                    capture=self.capture)
        return (hidden, torch.stack(captured)) if captured else hidden


class DeepstackConnector(nn.Module):
    """image_features (patches, width), deepstack_features (layers, patches, width) →
    image_embeds (tokens, d), deepstack_embeds (layers, tokens, d)."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.merger = visual.merger
        self.deepstack = visual.deepstack_merger_list

    def forward(self, image_features, deepstack_features):
        stacked = [merge(f) for merge, f in zip(self.deepstack, deepstack_features.unbind(0))]
        return self.merger(image_features), torch.stack(stacked)


def _dense_deepstack(hidden_states, visual_pos_masks, visual_embeds):
    """``_deepstack_process`` with the features laid over every token (zero at text ones)."""
    return hidden_states + visual_embeds


class DeepstackDecoder(DecoderWithCache):
    """DecoderWithCache with ``deepstack_embeds`` (layers, b, s, d) after position_ids."""

    def __init__(self, language_model: nn.Module, lm_head: nn.Module, num_layers: int):
        super().__init__(language_model, lm_head, num_layers)
        language_model._deepstack_process = _dense_deepstack  # an export-only copy of the model

    def forward(self, inputs_embeds, attention_mask, position_ids, deepstack_embeds, *past):
        return self.step(inputs_embeds, attention_mask, position_ids, past,
                         deepstack_visual_embeds=list(deepstack_embeds.unbind(0)))


def connector_graph(model, features: tuple) -> GraphExport:
    """``features``: the vision example's outputs (image_features, deepstack_features)."""
    return GraphExport(
        name="connector",
        module=DeepstackConnector(model.model.visual).eval(),
        example_inputs=features,
        input_names=["image_features", "deepstack_features"],
        output_names=["image_embeds", "deepstack_embeds"],
        dims={"image_features": {0: "num_patches"}, "deepstack_features": {1: "num_patches"}},
    )


def llm_graph(model) -> GraphExport:
    """The decoder with ``deepstack_embeds`` (needs at least one DeepStack layer)."""
    text = model.config.text_config
    layers = len(model.config.vision_config.deepstack_visual_indexes)
    language_model = model.model.language_model
    example = torch.randn(layers, EXAMPLE_BATCH, EXAMPLE_SEQ, text.hidden_size)
    return decoder_graph(language_model, model.lm_head, text, position_rows=3,
                         extra_inputs=[(DEEPSTACK_INPUT, example, {1: "batch", 2: "sequence"})],
                         module=DeepstackDecoder(language_model, model.lm_head, text.num_hidden_layers))
