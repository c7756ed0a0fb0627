"""BLIP-2 / InstructBLIP over an encoder-decoder LM (Flan-T5): the query embeddings and the
prompt go through the T5 encoder once; the decoder then reads the encoder's memory through
cross-attention whose keys/values (``cross_kv`` graph) are computed once per prompt."""

from __future__ import annotations

import torch

from ....runtime.manifest import Capabilities, LLMSpec
from ...onnx_export import GraphExport
from ...seq2seq import T5DecoderWithCache, T5Encoder, cross_decoder_graph, cross_kv_graph
from ..base import FamilyExport


def t5_layout(text) -> tuple[int, int, int]:
    """(decoder layers, heads, head_dim) of a T5 config."""
    return text.num_decoder_layers or text.num_layers, text.num_heads, text.d_kv


def encoder_graph(t5) -> GraphExport:
    d = t5.config.d_model
    return GraphExport(
        name="encoder",
        module=T5Encoder(t5.encoder).eval(),
        example_inputs=(torch.randn(2, 5, d), torch.ones(2, 5, dtype=torch.int64)),
        input_names=["inputs_embeds", "attention_mask"],
        output_names=["encoder_hidden_states"],
        dims={"inputs_embeds": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}},
    )


def t5_cross_kv_graph(t5) -> GraphExport:
    _, heads, head_dim = t5_layout(t5.config)
    projections = [(b.layer[1].EncDecAttention.k, b.layer[1].EncDecAttention.v) for b in t5.decoder.block]
    return cross_kv_graph(projections, heads, head_dim, t5.config.d_model)


def t5_decoder_graph(t5) -> GraphExport:
    layers, heads, head_dim = t5_layout(t5.config)
    scale = t5.config.d_model**-0.5 if t5.config.tie_word_embeddings else None
    module = T5DecoderWithCache(t5.decoder, t5.lm_head, layers, scale)
    return cross_decoder_graph(module, layers, heads, head_dim, t5.config.d_model, with_positions=False)


def prepare_seq2seq(model, family: str, architecture: str, vision_graph, connector_graph, image, **extra) -> FamilyExport:
    vision = vision_graph(model)
    with torch.no_grad():
        features = vision.module(*vision.example_inputs).contiguous()
    t5 = model.language_model
    layers, heads, head_dim = t5_layout(t5.config)
    embed = t5.get_input_embeddings().weight.detach()
    return FamilyExport(
        family=family,
        architecture=architecture,
        graphs=[vision, connector_graph(model, features), encoder_graph(t5), t5_cross_kv_graph(t5), t5_decoder_graph(t5)],
        embed_tokens=embed,
        image=image,
        llm=LLMSpec(num_layers=layers, num_kv_heads=heads, head_dim=head_dim, hidden_size=t5.config.d_model,
                    vocab_size=embed.shape[0], max_context=512),
        capabilities=Capabilities(encoder_decoder=True, cross_attention=True,
                                  connector_text_inputs=extra.pop("connector_text_inputs", False)),
        source_config=model.config.to_dict(),
        decoder_start_token_id=int(t5.config.decoder_start_token_id),
        **extra,
    )
