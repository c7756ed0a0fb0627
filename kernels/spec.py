"""What a preprocessing kernel is asked to do (``PreprocessSpec``, stored in the manifest) and
what it reports back (``TileLayout``, which the prompt builder uses to size image slots)."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

SCHEMES = ("fixed", "anyres", "hd", "patches", "native", "dynamic", "split", "pan_and_scan", "dual", "canvas")
RESIZE_MODES = ("shortest_edge", "exact", "none")


def from_dict(cls, data: dict):
    """Build dataclass ``cls`` from ``data``, ignoring unknown keys (newer manifests stay loadable)."""
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class PreprocessSpec:
    """One image → the pixel tensor the vision graph reads.

    fixed: optional pad-to-square with ``background`` (LLaVA-1.5 ``image_aspect_ratio="pad"``),
    resize (``shortest_edge`` keeps the aspect ratio, ``exact`` goes to ``size`` = [h, w]),
    optional centre ``crop`` = [h, w], then ``(x * rescale_factor - mean) / std`` per channel.

    anyres (LLaVA-NeXT): the base image resized to ``tile_size``² plus the best ``grid_pinpoints``
    resolution (aspect kept, centred on 0-padding as transformers pads) cut into ``tile_size`` tiles;
    ``patch_size`` is the vision tower's, used to count tokens after unpadding + ``image_newline``.

    hd (InternLM-XComposer2-4KHD / IXC-2.5): aspect kept, at most ``max_tiles`` local ``tile_size``
    tiles, ``background`` (white) padding across the short side (``hd_padding``: centred, or all at
    the end), plus a global view first; tokens per tile side are ``tile_size // patch_size // merge_size``.

    patches (Fuyu): shrink to fit ``size`` = [h, w] (never enlarge), pad right/bottom with
    ``background`` to a multiple of ``patch_size``, cut row-major (patch_size² · 3) vectors.

    native (Qwen2-VL): ``smart_resize`` to multiples of patch_size × merge_size with the area in
    [``min_pixels``, ``max_pixels``] (the image-token budget), patches flattened (c, t, y, x) in
    merge-window order, the image repeated ``temporal_patch_size`` times (kernels/native.py).

    dynamic (InternVL): the image resized whole to the ``tile_size`` grid of [``min_tiles``,
    ``max_tiles``] tiles closest to its aspect ratio, cut row-major, plus a tile_size² thumbnail
    when the grid has more than one tile (kernels/dynamic.py).
    """

    scheme: str = "fixed"
    resize: str = "shortest_edge"
    size: list[int] = field(default_factory=lambda: [336])
    crop: list[int] | None = None
    pad_to_square: bool = False
    background: list[int] = field(default_factory=lambda: [0, 0, 0])
    resample: str = "bicubic"
    rescale_factor: float = 1.0 / 255.0
    do_normalize: bool = True
    mean: list[float] = field(default_factory=lambda: [0.0, 0.0, 0.0])
    std: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    tokens_per_tile: int = 0
    max_input_pixels: int = 50_000_000  # refuse absurd inputs before allocating anything
    grid_pinpoints: list[list[int]] | None = None  # anyres: candidate [h, w] resolutions
    tile_size: int = 336  # anyres / hd: side of every tile
    patch_size: int = 14  # vision tower patch (anyres, hd) or Fuyu pixel patch (patches)
    merge_size: int = 1  # hd: tokens merged per side (2×2 → 2) before the LLM
    max_tiles: int = 25  # hd: hd_num, the most local tiles; dynamic: max_patches
    min_tiles: int = 1  # dynamic: min_patches, the fewest tiles in the grid
    # hd: where the padding to whole tiles goes — "center" (4KHD's padding_336: half above, half
    # below) or "end" (IXC-2.5: all below, or right of a portrait picture)
    hd_padding: str = "center"
    hd_cap_scale: bool = False  # hd: IXC-2.5 — at most ceil(long side / tile_size) tiles across (no enlarging)
    multi_image_max_tiles: int = 0  # hd: max_tiles when a prompt holds several images (IXC-2.5: 6); 0: max_tiles
    image_newline: bool = True  # a newline token ends every row of image tokens
    min_pixels: int = 56 * 56  # native: the resized area's bounds (the image-token budget)
    max_pixels: int = 28 * 28 * 1280
    temporal_patch_size: int = 2  # native: frames per patch (an image is repeated to fill them)
    window_size: int = 0  # native: Qwen2.5-VL's attention window side in pixels (0: no windowed layers)
    video_min_pixels: int = 128 * 28 * 28  # native: a video frame's resized area bounds (the video processor's)
    video_max_pixels: int = 28 * 28 * 768
    # native: Qwen3-VL's learned position-embedding grid side, resampled to each patch grid (0: none)
    position_grid: int = 0
    # native: what video_max_pixels bounds — "frame" (Qwen2/2.5-VL) or "clip", all frames together (Qwen3-VL)
    video_budget: str = "frame"
    # native: how frames are sampled at a frame rate — "qwen2" (a multiple of the temporal patch,
    # evenly stepped) or "linspace" (rounded linspace over the video, Qwen3-VL)
    frame_sampling: str = "qwen2"
    # anyres (LLaVA-OneVision's "anyres_max_N"): N, the tiles' worth of patches the unpadded grid may
    # hold before its features are bilinearly downsampled (kernels/anyres_max.py); 0: no budget
    anyres_max_tiles: int = 0
    # anyres (OneVision): in a prompt with several pictures each is only its base view, padded to a
    # square with ``background`` first, and one newline follows it (``for_images`` sets base_only)
    multi_image_base_only: bool = False
    base_only: bool = False
    # fixed (OneVision video frames): each frame's P×P features bilinearly pooled to ceil(P / n)² (0: none)
    feature_pooling: int = 0
    # split (Idefics3 / SmolVLM): cut the picture, resized to the longest edge ``size[0]`` and then to
    # multiples of ``tile_size``, into tiles plus a global view; False: one tile_size² view only
    split_image: bool = True
    # pan_and_scan (Gemma 3): crops of a picture whose aspect ratio is at least pan_min_ratio, each
    # side at least pan_min_crop pixels, at most pan_max_crops of them (kernels/pan_and_scan.py)
    pan_min_crop: int = 256
    pan_max_crops: int = 4
    pan_min_ratio: float = 1.2
    # dual (Mini-Gemini): the resize / crop / pad fields give the high-resolution view; tile_size the
    # low-resolution one, interpolated from it, cut into image_grid² crops (+ a global view) (kernels/dual.py)
    image_grid: int = 1
    image_global: bool = False
    # dual: how the low-resolution view is made — "interpolate" (Mini-Gemini: bilinear from the
    # normalised high-resolution view) or "resize" (CogAgent: the picture itself resized to tile_size²
    # with the same resample, as a second fixed placement; image_grid 1)
    dual_low: str = "interpolate"

    def __post_init__(self):
        from .resample import filter_name

        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown preprocessing scheme {self.scheme!r}; supported: {', '.join(SCHEMES)}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"unknown resize mode {self.resize!r}; supported: {', '.join(RESIZE_MODES)}")
        if self.scheme == "fixed" and self.resize == "shortest_edge" and len(self.size) != 1:
            raise ValueError(f"resize='shortest_edge' takes size=[edge], got {self.size}")
        if self.scheme == "fixed" and self.resize == "exact" and len(self.size) != 2:
            raise ValueError(f"resize='exact' takes size=[height, width], got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3 or len(self.background) != 3:
            raise ValueError("mean, std and background need one value per RGB channel")
        self.resample = filter_name(self.resample)
        self._check_scheme()

    def _check_scheme(self) -> None:
        t, p = self.tile_size, self.patch_size
        # OneVision (anyres_max_tiles) tiles need not divide: SigLIP-so400m's 384 px conv keeps 27 patches of 14
        whole = p > 0 and self.merge_size > 0 and (t % (p * self.merge_size) == 0 or (self.anyres_max_tiles > 0 and t >= p))
        if self.scheme in ("anyres", "hd") and (t <= 0 or p <= 0 or not whole):
            raise ValueError(f"tile_size {t} must be a positive multiple of patch_size × merge_size ({p}×{self.merge_size})")
        if self.scheme == "anyres":
            pins = self.grid_pinpoints or []
            if not pins or any(len(r) != 2 or r[0] % t or r[1] % t or min(r) <= 0 for r in pins):
                raise ValueError(f"anyres needs grid_pinpoints [[h, w], ...] that are positive multiples of tile_size {t}; got {pins}")
        if self.scheme == "native" and not (0 < self.min_pixels <= self.max_pixels and self.temporal_patch_size >= 1):
            raise ValueError(f"native needs 0 < min_pixels <= max_pixels and temporal_patch_size >= 1; got "
                             f"{self.min_pixels}, {self.max_pixels}, {self.temporal_patch_size}")
        if self.scheme == "native" and self.max_pixels < (p * self.merge_size) ** 2:
            raise ValueError(f"max_pixels {self.max_pixels} is below one merge window "
                             f"({p * self.merge_size}×{p * self.merge_size} pixels); raise it")
        if self.video_budget not in ("frame", "clip") or self.frame_sampling not in ("qwen2", "linspace"):
            raise ValueError(f"video_budget is 'frame' or 'clip' and frame_sampling 'qwen2' or 'linspace'; got "
                             f"{self.video_budget!r}, {self.frame_sampling!r}")
        if self.scheme == "dynamic" and not (t > 0 and 1 <= self.min_tiles <= self.max_tiles):
            raise ValueError(f"dynamic needs tile_size > 0 and 1 <= min_tiles <= max_tiles (min_patches, max_patches); "
                             f"got {t}, {self.min_tiles}, {self.max_tiles}")
        if self.scheme == "hd" and (self.max_tiles < 1 or self.multi_image_max_tiles < 0):
            raise ValueError(f"hd needs max_tiles >= 1 and multi_image_max_tiles >= 0, got {self.max_tiles}, "
                             f"{self.multi_image_max_tiles}")
        if self.scheme == "canvas" and (t <= 0 or self.max_tiles < 1):
            raise ValueError(f"canvas needs tile_size > 0 and max_tiles >= 1 (max_image_tiles); got {t}, {self.max_tiles}")
        if self.hd_padding not in ("center", "end"):
            raise ValueError(f"hd_padding is 'center' or 'end', got {self.hd_padding!r}")
        if self.scheme == "split" and (t <= 0 or len(self.size) != 1 or self.size[0] <= 0):
            raise ValueError(f"split needs tile_size > 0 and size=[longest edge] > 0; got {t}, {self.size}")
        if self.scheme == "pan_and_scan" and (len(self.size) != 2 or min(self.size) <= 0 or self.pan_min_crop <= 0
                                              or self.pan_max_crops < 2 or self.pan_min_ratio < 1):
            raise ValueError(f"pan_and_scan needs size=[h, w], pan_min_crop > 0, pan_max_crops >= 2 and "
                             f"pan_min_ratio >= 1; got {self.size}, {self.pan_min_crop}, {self.pan_max_crops}, "
                             f"{self.pan_min_ratio}")
        if self.scheme == "dual" and self.dual_low == "resize":
            if t <= 0 or self.image_grid != 1 or self.resize != "exact" or self.crop or self.pad_to_square:
                raise ValueError(f"dual with a resized low view needs tile_size > 0, image_grid 1 and an exact resize "
                                 f"without crop or padding; got {t}, {self.image_grid}, {self.resize}, {self.crop}, "
                                 f"{self.pad_to_square}")
        elif self.scheme == "dual" and (self.dual_low != "interpolate" or t <= 0 or self.image_grid < 1
                                        or (self.image_global and self.image_grid < 2)
                                        or self.resize != "shortest_edge" or not self.crop):
            raise ValueError(f"dual needs dual_low 'interpolate' or 'resize', tile_size > 0, image_grid >= 1 "
                             f"(image_global only with image_grid >= 2) and a shortest_edge resize with a crop; got "
                             f"{self.dual_low!r}, {t}, {self.image_grid}, {self.image_global}, "
                             f"{self.resize}, {self.crop}")
        if self.scheme == "patches":
            if len(self.size) != 2 or p <= 0 or self.size[0] % p or self.size[1] % p:
                raise ValueError(f"patches needs size=[h, w] in multiples of patch_size {p}; got size={self.size}")

    def for_images(self, num_images: int) -> "PreprocessSpec":
        """The spec for each picture of a prompt with ``num_images`` of them (hd: the smaller tile
        budget several pictures get)."""
        if num_images > 1 and self.multi_image_max_tiles:
            return replace(self, max_tiles=self.multi_image_max_tiles)
        if num_images > 1 and self.multi_image_base_only:
            return replace(self, base_only=True)
        return self

    @property
    def output_hw(self) -> tuple[int, int] | None:
        """(h, w) of every tile when fixed by the spec, else None."""
        if self.crop:
            return tuple(self.crop)
        if self.resize == "exact":
            return tuple(self.size)
        return None


@dataclass(frozen=True)
class TileLayout:
    """How the pixels are laid out and how many image tokens the prompt must reserve."""

    num_tiles: int
    tile_hw: tuple[int, int]
    num_image_tokens: int
    grid: tuple[int, int] = (1, 1)  # (rows, cols) of local tiles; (1, 1) for one global view; native: patches
    frames: int = 1  # native: temporal patches (a video's frame groups; 1 for an image)
