"""What ``vlmforge build`` does with its parsed arguments (cli.py only declares them)."""

from __future__ import annotations

from ...runtime.errors import VlmforgeError
from ...runtime.manifest import load_manifest
from .build import adopt_engines, build_engines, emit_trtexec
from .options import BuildOptions, parse_precision


def options_from_args(args, graph_names: list[str]) -> BuildOptions:
    if args.workspace_gb <= 0:
        raise VlmforgeError(f"--workspace-gb must be positive, got {args.workspace_gb}")
    return BuildOptions(
        precision=parse_precision(args.precision, graph_names),
        max_tiles=args.max_tiles,
        max_context=args.max_context,
        workspace_gb=args.workspace_gb,
        timing_cache=args.timing_cache,
        dla_graphs=tuple(g.strip() for g in (args.dla or "").split(",") if g.strip()),
        dla_core=args.dla_core,
    )


def run_build(args) -> str:
    """Build, emit a trtexec script, or adopt script-built engines; returns a one-line summary."""
    if args.backend != "tensorrt":
        raise VlmforgeError(f"vlmforge build makes TensorRT engines only; --backend {args.backend!r} is not one (use tensorrt)")
    if args.emit_trtexec and args.adopt:
        raise VlmforgeError("pass either --emit-trtexec (write the script) or --adopt (record what it built), not both")
    names = list(load_manifest(args.model, verify=False).graphs)
    options = options_from_args(args, names)
    if args.emit_trtexec:
        path = emit_trtexec(args.model, args.emit_trtexec, options)
        return f"wrote {path}: run it on the device (bash {path} {args.model}), then vlmforge build {args.model} --adopt"
    manifest = (adopt_engines if args.adopt else build_engines)(args.model, options)
    e = manifest.engines
    engines = ", ".join(f"{g} {s.precision} {s.bytes / 1e6:.1f} MB" for g, s in e.graphs.items())
    return (f"{'recorded' if args.adopt else 'built'} {engines} for TensorRT {e.fingerprint.tensorrt_version} on "
            f"{e.fingerprint.gpu_name} (sm {e.fingerprint.compute_capability}) in {e.fingerprint.build_seconds:.1f} s")
