"""``vlmforge calibrate | quantize | verify``: the command-line side of this package.

``add_commands`` registers the three subcommands on the main parser; nothing heavy is
imported until a command runs.
"""

from __future__ import annotations

import sys
from pathlib import Path


def cmd_calibrate(args) -> int:
    from .calibrator import calibrate

    result = calibrate(args.model, args.images, args.prompts, method=args.method, num_samples=args.samples,
                       cache_path=args.cache, decode_steps=args.decode_steps)
    for reason in result.cache.skipped_images:
        print(f"skipped: {reason}", file=sys.stderr)
    print(result.summary())
    return 0


def cmd_quantize(args) -> int:
    from .quantize import quantize_model

    manifest = quantize_model(
        args.model, args.out, args.precision, calibration=args.calibration, target=args.target,
        block_size=args.block_size, accuracy_level=args.accuracy_level or None, min_sqnr_db=args.min_sqnr,
        embeddings=args.embeddings, kv_cache=args.kv_cache, overwrite=args.overwrite,
    )
    size = sum(a.bytes for a in manifest.artifacts.values())
    print(f"quantised {args.model} → {args.out} ({size / 1e6:.1f} MB, target {args.target}, "
          f"KV cache {manifest.llm.kv_dtype})")
    for name, spec in manifest.graphs.items():
        q = spec.quantization or {}
        kept = len(q.get("fp32_nodes", {}))
        form = f", {q['weight_form']}" if "weight_form" in q else ""
        print(f"  {name:9s} {spec.precision}{form}" + (f", {kept} node(s) kept in float (see manifest)" if kept else ""))
    return 0


def cmd_verify(args) -> int:
    from .verify import verify_model

    report = verify_model(args.model, args.reference, images=args.images, prompts=args.prompts,
                          num_samples=args.samples, new_tokens=args.new_tokens, shapes_suite=args.shapes_suite)
    print(report.table())
    if args.json:
        Path(args.json).write_text(report.to_json())
        print(f"wrote {args.json}")
    return 0


def add_commands(sub, needs_export_stack=lambda f: f) -> None:
    """``needs_export_stack`` wraps the commands that need onnx (cli.py: a one-line install hint)."""
    c = sub.add_parser("calibrate", help="measure an fp32 export on real images + prompts (for quantize)")
    c.add_argument("model", help="an exported fp32 folder")
    c.add_argument("--images", required=True, help="folder of calibration pictures (unreadable files are skipped)")
    c.add_argument("--prompts", help="text file, one prompt per line (default: built-in questions)")
    c.add_argument("--method", default="minmax", choices=("minmax", "percentile", "entropy"))
    c.add_argument("--samples", type=int, help="image+prompt pairs (default: the longer of the two lists)")
    c.add_argument("--decode-steps", type=int, default=2, help="LLM decode steps per pair, with the real KV cache")
    c.add_argument("--cache", help="where to write the cache (default: MODEL/calibration.json)")
    c.set_defaults(func=needs_export_stack(cmd_calibrate))

    q = sub.add_parser("quantize", help="write a quantised copy of an fp32 export")
    q.add_argument("model", help="an exported fp32 folder")
    q.add_argument("-o", "--out", required=True)
    q.add_argument("--precision", required=True,
                   help="fp16|int8|w8|w4|w8a8 for every graph, or per graph: vision=int8,connector=fp16,llm=w4")
    q.add_argument("--target", default="onnxruntime", choices=("onnxruntime", "tensorrt"),
                   help="weight-only form: MatMulNBits (onnxruntime) or DequantizeLinear→MatMul (tensorrt)")
    q.add_argument("--calibration", help="calibration cache (default: MODEL/calibration.json); int8 and fp16 need it")
    q.add_argument("--block-size", type=int, default=None,
                   help="weight-only block size along K (32, 64, 128, 256; default 128 for w8 and w4)")
    q.add_argument("--accuracy-level", type=int, default=4,
                   help="MatMulNBits compute type: 4 = int8 activations inside the kernel; 0 = float (for 8-bit "
                        "weights ~100x slower on x86 CPU, measured)")
    q.add_argument("--min-sqnr", type=float, default=20.0,
                   help="int8: GEMMs whose input measured a lower INT8 SQNR (dB) stay float")
    q.add_argument("--embeddings", default="float16", choices=("float16", "float32"),
                   help="storage of the token embedding table (float16 halves it)")
    q.add_argument("--kv-cache", default="float", choices=("float", "int8"),
                   help="int8: keys/values stored int8 with a scale per token and head (3.8x less cache than "
                        "fp32 at 64-wide heads; ONNX Runtime, append-layout exports); measure it with verify")
    q.add_argument("--overwrite", action="store_true")
    q.set_defaults(func=needs_export_stack(cmd_quantize))

    v = sub.add_parser("verify", help="fidelity report of a quantised folder against its fp32 reference")
    v.add_argument("model", help="the quantised folder")
    v.add_argument("--reference", required=True, help="the fp32 export it came from")
    v.add_argument("--images", help="folder of pictures (default: synthetic pictures)")
    v.add_argument("--prompts", help="text file, one prompt per line (default: built-in questions)")
    v.add_argument("--samples", type=int, default=50)
    v.add_argument("--new-tokens", type=int, default=8, help="greedy tokens compared per pair")
    v.add_argument("--shapes-suite", type=int, default=0, metavar="N",
                   help="also answer N test questions of the bundled shapes task (needs vlmforge.examples)")
    v.add_argument("--json", help="write the report as JSON here")
    v.set_defaults(func=cmd_verify)
