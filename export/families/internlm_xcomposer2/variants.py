"""The HD variants of the InternLM-XComposer2 line, told apart by the vision tower's picture size
(the checkpoints ship the tower's weights; 4KHD loads its CLIP config from the hub, not a subfolder).

Both tile a picture the ``HD_transform`` way (kernels/hd.py) and pack a global view, ``glb_GN`` and
the local grid with ``sub_GN`` after every token row; they differ only in these numbers and rules:

* IXC-2.5 (the oracle's code, 560-px CLIP): scale capped at ceil(width / 560), padding all below
  (``padding_336(img, 560)`` with top_padding 0), hd_num 6 with several pictures, chat() hd_num 24.
* IXC2-4KHD (the original checkpoint, 336-px CLIP ViT-L/14 ``openai/clip-vit-large-patch14-336``):
  no scale cap, padding centred (``top_padding = int((tar - height) / 2)``, i.e. left/right of a
  portrait picture after the transpose back), 24×24 patches → 12×12 merged tokens per tile;
  chat() takes one picture and tiles it with hd_num 25 unless config.json says otherwise; its chat
  format is the IXC2-era one (IXC2-VL's: the default meta instruction, a BOS before every text part
  — its evaluation script's chat() calls that interleav_wrap_chat), not IXC-2.5's.

IXC2-VL (``internlm-xcomposer2-vl-7b``) is no HD variant but one view (``SingleView``): the
picture resized to the tower's square (490 px, bicubic), CLIP ViT-L/14-336 whose 24×24 position
table the original's ``resize_pos`` resized bicubically to 35×35 before the checkpoint (which
stores the resized table) is loaded, the last layer's 1225 patches without the 2×2 merge, no
separators (the checkpoint has no ``plora_sub_GN`` / ``plora_glb_GN``), ``vision_proj`` from the
tower's own width. It is told apart by those missing separators.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class HDVariant:
    name: str
    tile: int  # px: the CLIP tower's image_size
    padding: str  # kernels' hd_padding: "end" (all below / right) or "center"
    cap_scale: bool  # kernels' hd_cap_scale
    multi_image_hd_num: int  # hd_num with several pictures in one prompt; 0: hd_num
    default_hd_num: int  # chat()'s hd_num when config.json has none
    # chat(): "ixc2.5" (BOS once, a lone picture in front, no default system turn) or "ixc2" (the
    # IXC2-era wrapping: the default meta instruction, every text part with its own BOS)
    chat: str


IXC2D5 = HDVariant("IXC-2.5", 560, "end", True, 6, 24, "ixc2.5")
IXC2_4KHD = HDVariant("IXC2-4KHD", 336, "center", False, 0, 25, "ixc2")
VARIANTS = {v.tile: v for v in (IXC2D5, IXC2_4KHD)}


def variant_for(image_size: int) -> HDVariant | None:
    return VARIANTS.get(image_size)


@dataclass(frozen=True)
class SingleView:
    """IXC2-VL: one tile-sized view per picture, every patch one token."""

    name: str = "IXC2-VL"
    merge: int = 1  # tokens merged per side before vision_proj (the HD variants: 2)
    chat: str = "ixc2"  # as HDVariant.chat


IXC2_VL = SingleView()
SEPARATORS = ("plora_sub_GN", "plora_glb_GN")  # the HD variants' learned separators


def is_single_view(state: dict) -> bool:
    """IXC2-VL's checkpoint has neither HD separator (its __init__ never creates them)."""
    return not any(name in state for name in SEPARATORS)
