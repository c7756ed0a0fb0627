"""CogAgent's ``config.json`` (``cogagent-chat-hf`` / ``cogagent-vqa-hf``): CogVLM v1's fields
(export/families/cogvlm/config.py) plus the high-resolution branch — ``cross_image_size`` (1120),
``cross_hidden_size`` (the EVA2-CLIP-L width, 1024) and ``cross_compute_hidden_size`` (what each
decoder layer's cross-attention projects to, split over ``num_attention_heads``).

The EVA2-CLIP-L tower itself is not in config.json: the remote code hard-wires it
(``Eva2LargeEncoder``: width 1024, heads of 64, SwiGLU of int(1024 · 2.6667), patch 14, 2-D RoPE
interpolated from a 16² grid); its depth is read from the weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..cogvlm.config import CogVLMConfig, CogVLMConfigError, parse_config as parse_cogvlm

TEMPLATES = ("base", "chat", "chat_old", "vqa")
CROSS_WIDTH, CROSS_HEAD_WIDTH, CROSS_PATCH, CROSS_ROPE_GRID = 1024, 64, 14, 16
CROSS_MLP = int(CROSS_WIDTH * 2.6667)


@dataclass(frozen=True)
class CogAgentConfig:
    base: CogVLMConfig  # the low-resolution tower and the visual-expert decoder
    cross_image_size: int
    cross_hidden_size: int
    cross_compute_hidden_size: int
    cross_layers: int  # EVA2-CLIP-L blocks in the checkpoint (the last one is never run, as upstream)

    @property
    def cross_grid(self) -> int:
        return self.cross_image_size // CROSS_PATCH

    @property
    def cross_head_dim(self) -> int:
        return self.cross_compute_hidden_size // self.base.num_heads


def parse_config(raw: dict, cross_layers: int) -> CogAgentConfig:
    base = parse_cogvlm(raw, TEMPLATES)
    c = CogAgentConfig(base=base, cross_image_size=int(raw.get("cross_image_size", 1120)),
                       cross_hidden_size=int(raw.get("cross_hidden_size", CROSS_WIDTH)),
                       cross_compute_hidden_size=int(raw.get("cross_compute_hidden_size", CROSS_WIDTH)),
                       cross_layers=cross_layers)
    problems = []
    if base.version != 1:
        problems.append("CogAgent's decoder is CogVLM v1's (no num_multi_query_heads)")
    if c.cross_hidden_size != CROSS_WIDTH:
        problems.append(f"cross_hidden_size {c.cross_hidden_size} must be the EVA2-CLIP-L width {CROSS_WIDTH}")
    if c.cross_image_size % CROSS_PATCH:
        problems.append(f"cross_image_size {c.cross_image_size} must be a multiple of the patch size {CROSS_PATCH}")
    if c.cross_compute_hidden_size % base.num_heads:
        problems.append(f"cross_compute_hidden_size {c.cross_compute_hidden_size} must split into "
                        f"num_attention_heads {base.num_heads} heads")
    if cross_layers < 2:
        problems.append(f"the checkpoint holds {cross_layers} EVA2-CLIP-L blocks under model.cross_vision; CogAgent "
                        "runs all but the last, so it needs at least 2")
    if problems:
        raise CogVLMConfigError("config.json does not describe a CogAgent model vlmforge can build: " + "; ".join(problems))
    return c
