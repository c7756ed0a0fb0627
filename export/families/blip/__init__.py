"""BLIP (``BlipForConditionalGeneration``): a ViT, and a BERT-style text decoder that reads the
image through cross-attention in every layer (captioning, with or without a text prefix).

Graphs: vision = the ViT's last hidden state; cross_kv = every decoder layer's cross-attention
keys/values of the image, computed once per image; llm = the text decoder with self-attention
KV cache. No connector and no image slots in the prompt (``ImageSpec.placement = "memory"``).
The prompt is tokenised without [CLS]/[SEP] behind the [DEC] (BOS) token, as
``BlipForConditionalGeneration.generate`` rewrites it; generation stops at [SEP].
"""

from __future__ import annotations

from pathlib import Path


from ....runtime.manifest import Capabilities, ImageSpec, LLMSpec
from ...preprocess import clip_style_spec, read_processor_config
from ...seq2seq import BlipTextDecoderWithCache, cross_decoder_graph, cross_kv_graph
from ..base import FamilyExport, load_pretrained
from ..blip_2 import vision_graph
from ..llava import num_patches

ARCHITECTURES = ("BlipForConditionalGeneration",)


def load(model_dir: Path):
    from transformers import BlipForConditionalGeneration

    return load_pretrained(BlipForConditionalGeneration, model_dir)


def text_layout(text) -> tuple[int, int, int]:
    heads = text.num_attention_heads
    return text.num_hidden_layers, heads, text.hidden_size // heads


def prepare(model_dir: Path) -> FamilyExport:
    model = load(model_dir)
    config = model.config
    text = config.text_config
    layers, heads, head_dim = text_layout(text)
    decoder = model.text_decoder
    projections = [(layer.crossattention.self.key, layer.crossattention.self.value)
                   for layer in decoder.bert.encoder.layer]
    width = config.vision_config.hidden_size
    embed = decoder.get_input_embeddings().weight.detach()
    proc = read_processor_config(model_dir)
    return FamilyExport(
        family="blip",
        architecture=ARCHITECTURES[0],
        graphs=[
            vision_graph(model),
            cross_kv_graph(projections, heads, head_dim, width),
            cross_decoder_graph(BlipTextDecoderWithCache(decoder, layers, width), layers, heads, head_dim,
                                text.hidden_size, with_positions=True),
        ],
        embed_tokens=embed,
        image=ImageSpec(image_token="", image_token_id=-1, placement="memory",
                        # tokens of memory per image: the patches + CLS
                        preprocess=clip_style_spec(proc, tokens_per_tile=num_patches(config.vision_config) + 1)),
        llm=LLMSpec(num_layers=layers, num_kv_heads=heads, head_dim=head_dim, hidden_size=text.hidden_size,
                    vocab_size=embed.shape[0], max_context=int(text.max_position_embeddings)),
        capabilities=Capabilities(cross_attention=True),
        source_config=config.to_dict(),
        tokenizer_overrides={"add_special_tokens": False, "prefix_ids": [int(text.bos_token_id)],
                             "eos_token_ids": [int(text.sep_token_id)]},
    )
