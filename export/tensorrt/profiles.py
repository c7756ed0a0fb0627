"""Optimisation profiles (min / opt / max of every dynamic input) derived from the manifest.

Pure host logic: every symbolic dim of every graph input gets a range, an unknown symbol is an
error, and the same profiles feed the TensorRT builder, the trtexec script and the manifest.

Vision and connector: one profile, ``num_tiles`` 1..max_tiles (opt = max_tiles: anyres and hd
images usually fill their grid; a fixed-size tower always sends 1). The connector's other dims
(``num_patches``) are fixed by the vision graph's output of the same tensor. Native-resolution
towers (Qwen2-VL) take a variable number of patches instead: ``num_patches`` from one merge
window up to what the export's ``max_pixels`` bound allows (``--max-tiles`` caps it lower).

LLM: two profiles, because its two uses have nothing in common.
  0 prefill: sequence 1..max_context from an empty cache (past_sequence 0) — GEMMs over the
    whole prompt; opt = one image's tokens plus a short question.
  1 decode:  sequence 1, past_sequence 1..max_context-1 — one token against the cache, GEMVs
    (an append-layout export: past_sequence is the cache's capacity, whole blocks up to
    max_context rounded up to one; total_sequence one more).
With one profile the opt shapes would tune either the prompt GEMMs or the per-token GEMVs, and
the decode step — nearly every call — would run kernels picked for a prompt. Prefill keeps
past_sequence at 0 because the runtime always prefills into an empty cache (decode.prefill
resets it); a wider range would make TensorRT plan memory for past + sequence = 2 × max_context.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...runtime.kv_cache import CAPACITY_BLOCK
from ...runtime.errors import VlmforgeError
from ...runtime.manifest import Manifest

TYPICAL_TEXT_TOKENS = 64  # a question around the image, for the prefill opt shape
TYPICAL_NEW_TOKENS = 128  # decode opt shape sits halfway through such an answer
MEMORY_IMAGES = 2  # cross-attention memory (cross_kv, llm memory_sequence): up to this many pictures a prompt


@dataclass(frozen=True)
class DimRange:
    min: int
    opt: int
    max: int

    def __post_init__(self):
        assert 0 <= self.min <= self.opt <= self.max, self


# one profile: input name → (min shape, opt shape, max shape)
Profile = dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]


def tiles_per_image(manifest: Manifest) -> int:
    """The most tiles one image becomes under the manifest's preprocessing (native: patches)."""
    p = manifest.image.preprocess
    if p.scheme == "native":
        return native_max_patches(p)
    if p.scheme == "fixed":
        return 1
    if p.scheme == "anyres":
        return 1 + max((h // p.tile_size) * (w // p.tile_size) for h, w in p.grid_pinpoints)
    if p.scheme == "hd":
        return 1 + p.max_tiles  # global view + local tiles
    if p.scheme == "dynamic":
        return p.max_tiles + (p.max_tiles > 1)  # the grid + its thumbnail (none for a single tile)
    if p.scheme == "canvas":
        return p.max_tiles  # Llama-3.2-Vision: the picture's own tiles (the vision graph pads the rest)
    if p.scheme == "dual":
        from ...kernels.dual import num_views

        return num_views(p)  # the low-resolution views (the aux tower always gets one)
    raise VlmforgeError(f"TensorRT profiles for preprocessing scheme {p.scheme!r} are not supported; "
                        "supported: fixed, anyres, hd, native, dynamic, canvas, dual")


def native_max_patches(p) -> int:
    """Patches of the largest picture the budget admits: max_pixels / patch², whole merge windows."""
    window = p.merge_size**2
    return max(window, p.max_pixels // p.patch_size**2 // window * window)


def memory_range(manifest: Manifest, max_tiles: int) -> DimRange:
    """Rows of cross-attention memory: 1 (a text-only prompt's zero row, Mllama) up to MEMORY_IMAGES
    pictures; opt one picture. A canvas picture is always its padded max_tiles tiles of rows."""
    p = manifest.image.preprocess
    per_image = p.tokens_per_tile * (p.max_tiles if p.scheme == "canvas" else max_tiles)
    name = manifest.capabilities.cross_memory
    if name:  # a connector output of its own (CogAgent's high-resolution features): its rows per picture
        shape = next(t.shape for t in manifest.graphs["connector"].outputs if t.name == name)
        per_image = shape[1] if isinstance(shape[1], int) else per_image
    return DimRange(1, per_image, MEMORY_IMAGES * per_image)


def resolve_limits(manifest: Manifest, max_tiles: int | None, max_context: int | None) -> tuple[int, int]:
    tiles = tiles_per_image(manifest) if max_tiles is None else int(max_tiles)
    context = manifest.llm.max_context if max_context is None else int(max_context)
    if tiles < 1:
        raise VlmforgeError(f"--max-tiles must be >= 1, got {tiles}")
    if not 2 <= context <= manifest.llm.max_context:
        raise VlmforgeError(
            f"--max-context must be between 2 and the model's context {manifest.llm.max_context}, got {context}"
        )
    return tiles, context


def symbol_ranges(manifest: Manifest, graph: str, max_tiles: int, max_context: int) -> list[dict[str, DimRange]]:
    """One {symbol: range} per profile of ``graph``."""
    spec = manifest.image.preprocess
    if graph in ("vision", "connector") and spec.scheme == "native":
        window = spec.merge_size**2
        return [{"num_patches": DimRange(window, max_tiles, max_tiles)}]
    if graph in ("vision", "connector") or graph in {t.graph for t in manifest.vision_towers}:
        return [{"num_tiles": DimRange(1, max_tiles, max_tiles)}]
    if graph == "cross_kv":
        return [{"batch": DimRange(1, 1, 1), "memory_sequence": memory_range(manifest, max_tiles)}]
    if graph == "llm":
        image_tokens = max_tiles // spec.merge_size**2 if spec.scheme == "native" else spec.tokens_per_tile
        opt_prompt = min(max_context, image_tokens + TYPICAL_TEXT_TOKENS)
        opt_past = min(max_context - 1, opt_prompt + TYPICAL_NEW_TOKENS // 2)
        one = DimRange(1, 1, 1)
        prefill = {"batch": one, "sequence": DimRange(1, opt_prompt, max_context), "past_sequence": DimRange(0, 0, 0),
                   "total_sequence": DimRange(1, opt_prompt, max_context)}
        decode = {"batch": one, "sequence": one, "past_sequence": DimRange(1, opt_past, max_context - 1),
                  "total_sequence": DimRange(2, opt_past + 1, max_context)}
        if manifest.llm.cache_layout == "append":  # past is the cache's capacity: whole blocks (runtime/kv_cache.py)
            top = -(-max_context // CAPACITY_BLOCK) * CAPACITY_BLOCK
            opt = min(top, -(-opt_past // CAPACITY_BLOCK) * CAPACITY_BLOCK)
            decode["past_sequence"], decode["total_sequence"] = DimRange(1, opt, top), DimRange(2, opt + 1, top + 1)
        cap = manifest.llm.attention.window_cache  # bounded sliding-window layers' past (Gemma 3)
        if manifest.llm.attention.window_layers:
            top = min(cap, max_context - 1)
            prefill["window_past_sequence"] = DimRange(0, 0, 0)
            decode["window_past_sequence"] = DimRange(1, min(opt_past, top), top)
        if "cross_kv" in manifest.graphs:  # the memory's K/V and masks, bound at every step
            prefill["memory_sequence"] = decode["memory_sequence"] = memory_range(manifest, max_tiles)
        return [prefill, decode]
    raise VlmforgeError(f"no TensorRT profile rule for graph {graph!r}; known graphs: vision, connector, llm")


def producer_dims(manifest: Manifest, graph: str) -> dict[tuple[str, int], int]:
    """(tensor name, axis) → fixed size, from other graphs' outputs that feed this graph's inputs."""
    fixed = {}
    for name, spec in manifest.graphs.items():
        if name == graph:
            continue
        for t in spec.outputs:
            fixed.update({(t.name, axis): d for axis, d in enumerate(t.shape) if isinstance(d, int)})
    return fixed


def graph_profiles(manifest: Manifest, graph: str, max_tiles: int, max_context: int) -> list[Profile]:
    """Concrete (min, opt, max) shapes of every input of ``graph``, one dict per profile."""
    spec = manifest.graphs[graph]
    fixed = producer_dims(manifest, graph)
    profiles = []
    for ranges in symbol_ranges(manifest, graph, max_tiles, max_context):
        profile = {}
        for t in spec.inputs:
            dims = [_dim_range(graph, t.name, axis, d, ranges, fixed) for axis, d in enumerate(t.shape)]
            profile[t.name] = tuple(tuple(getattr(r, k) for r in dims) for k in ("min", "opt", "max"))
        profiles.append(profile)
    return profiles


def _dim_range(graph: str, tensor: str, axis: int, dim, ranges: dict[str, DimRange], fixed) -> DimRange:
    if isinstance(dim, int):
        return DimRange(dim, dim, dim)
    if dim in ranges:
        return ranges[dim]
    if (tensor, axis) in fixed:  # e.g. connector num_patches = vision image_features axis 1
        n = fixed[(tensor, axis)]
        return DimRange(n, n, n)
    raise VlmforgeError(
        f"the {graph} graph's input {tensor} has symbolic dim {dim!r} (axis {axis}) that vlmforge cannot size for "
        f"TensorRT; known symbols for {graph}: {', '.join(sorted(ranges))}. Re-export the model with this vlmforge version"
    )


def static_profile(profile: Profile) -> Profile:
    """Every range pinned to its opt shape (DLA runs static shapes only)."""
    return {name: (opt, opt, opt) for name, (_, opt, _) in profile.items()}


def profiles_to_json(profiles: list[Profile]) -> list[dict]:
    return [{name: {"min": list(lo), "opt": list(opt), "max": list(hi)} for name, (lo, opt, hi) in p.items()}
            for p in profiles]
