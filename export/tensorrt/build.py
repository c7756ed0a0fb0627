"""``vlmforge build``: plan the engines of an exported folder, then build them with the TensorRT
Python API, or write the same builds as a trtexec script, or adopt engines a script built.

Each graph becomes ``<graph>.engine`` next to its ONNX file; the manifest gains an ``engines``
section (path, SHA-256, size, precision, profiles per graph; TensorRT version, GPU and compute
capability of the builder) that the runtime checks before loading anything.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path

from ...runtime.engines import BuildFingerprint, EngineSpec, EnginesSpec
from ...runtime.errors import ManifestError
from ...runtime.manifest import MANIFEST_NAME, Manifest, load_manifest, sha256_file
from .options import BuildOptions, GraphPlan, plan_build
from .profiles import Profile, graph_profiles, profiles_to_json, resolve_limits, static_profile
from .trtexec import trtexec_args, write_build_script


@dataclass
class BuildPlan:
    graphs: dict[str, GraphPlan]
    profiles: dict[str, list[Profile]]
    max_tiles: int
    max_context: int


def plan(manifest: Manifest, options: BuildOptions) -> BuildPlan:
    if manifest.llm.head != "full":
        raise ValueError(f"this export's LLM graph has a {manifest.llm.head} LM head (com.microsoft.MatMulNBits, which "
                         "TensorRT cannot parse); re-export with --lm-head full to build TensorRT engines")
    tiles, context = resolve_limits(manifest, options.max_tiles, options.max_context)
    plans = plan_build(manifest, options)
    profiles = {}
    for name in manifest.graphs:
        ranges = graph_profiles(manifest, name, tiles, context)
        # DLA runs static shapes only: pin every range to its opt shape
        profiles[name] = [static_profile(p) for p in ranges] if name in options.dla_graphs else ranges
    return BuildPlan(plans, profiles, tiles, context)


def trtexec_commands(manifest: Manifest, options: BuildOptions) -> dict[str, list[str]]:
    bp = plan(manifest, options)
    return {name: trtexec_args(name, spec.path, bp.graphs[name], bp.profiles[name], options)
            for name, spec in manifest.graphs.items()}


def emit_trtexec(model_dir: str | Path, script: str | Path, options: BuildOptions) -> Path:
    manifest = load_manifest(model_dir, verify=False)
    return write_build_script(script, trtexec_commands(manifest, options), f"{manifest.family} ({manifest.architecture})")


def build_engines(model_dir: str | Path, options: BuildOptions) -> Manifest:
    """Build every graph's engine on this machine and record them in the manifest."""
    from ...runtime.tensorrt_session import current_fingerprint
    from .builder import TimingCache, build_engine

    root = Path(model_dir)
    manifest = load_manifest(root)
    bp = plan(manifest, options)  # every user mistake surfaces here, before TensorRT starts
    fingerprint = current_fingerprint()
    timing = TimingCache(options.timing_cache)
    seconds = {}
    for name, spec in manifest.graphs.items():
        seconds[name] = build_engine(root / spec.path, root / f"{name}.engine", bp.graphs[name], bp.profiles[name],
                                     options, name in options.dla_graphs, timing)
    return record_engines(root, manifest, bp, fingerprint, seconds, options)


def adopt_engines(model_dir: str | Path, options: BuildOptions) -> Manifest:
    """Record engines that build.sh (trtexec) wrote, with this machine's fingerprint."""
    from ...runtime.tensorrt_session import current_fingerprint

    root = Path(model_dir)
    manifest = load_manifest(root)
    return record_engines(root, manifest, plan(manifest, options), current_fingerprint(), {}, options)


def record_engines(root: Path, manifest: Manifest, bp: BuildPlan, fingerprint: BuildFingerprint,
                   seconds: dict[str, float], options: BuildOptions) -> Manifest:
    """Hash ``<graph>.engine`` files and write the manifest's engines section (atomically)."""
    graphs = {}
    for name in manifest.graphs:
        path = root / f"{name}.engine"
        if not path.is_file():
            raise ManifestError(f"{path} does not exist; build it first (vlmforge build {root} --backend tensorrt, or build.sh)")
        graphs[name] = EngineSpec(
            path=path.name, sha256=sha256_file(path), bytes=path.stat().st_size, precision=bp.graphs[name].precision,
            profiles=profiles_to_json(bp.profiles[name]), strongly_typed=bp.graphs[name].strongly_typed,
            dla_core=options.dla_core if name in options.dla_graphs else None, build_seconds=seconds.get(name, 0.0),
        )
    fingerprint.build_seconds = sum(seconds.values())
    manifest.engines = EnginesSpec(fingerprint=fingerprint, graphs=graphs, max_context=bp.max_context, max_tiles=bp.max_tiles)
    tmp = root / f".{MANIFEST_NAME}.tmp-{os.getpid()}-{time.monotonic_ns()}"
    tmp.write_text(manifest.to_json())
    os.replace(tmp, root / MANIFEST_NAME)  # a reader never sees a half-written manifest
    return manifest
