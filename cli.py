"""The ``vlmforge`` command line: export, build, run, profile, demo, eval, calibrate, quantize, verify."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BACKENDS = ("auto", "onnxruntime", "tensorrt", "onnxruntime-cuda", "onnxruntime-tensorrt")  # = runtime.backends.BACKENDS
PREPROCESS = ("auto", "cpu", "gpu")  # = runtime.preprocess.MODES
DEFAULT_PROMPT = "USER: <image>\nWhat is in the picture? ASSISTANT:"


def cmd_export(args) -> int:
    from .export import export_model

    manifest = export_model(args.model_dir, args.out, overwrite=args.overwrite, check=not args.no_check, lm_head=args.lm_head)
    size = sum(a.bytes for a in manifest.artifacts.values())
    print(f"exported {manifest.family} ({manifest.architecture}) to {args.out}: "
          f"{len(manifest.artifacts)} artifacts, {size / 1e6:.1f} MB")
    return 0


def _prompt_and_images(args):
    prompt = args.prompt.replace("\\n", "\n")
    return prompt, list(args.image or [])


def cmd_run(args) -> int:
    from .runtime import Pipeline

    pipe = Pipeline.load(args.model, backend=args.backend, verify=not args.no_verify, threads=args.threads,
                         preprocess=args.preprocess)
    prompt, images = _prompt_and_images(args)
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                    repetition_penalty=args.repetition_penalty, do_sample=args.sample or None)
    for piece in pipe.stream(prompt, images=images, max_new_tokens=args.max_new_tokens, stop=args.stop, **sampling):
        print(piece, end="", flush=True)
    print()
    s = pipe.last_result.stats
    print(f"[{s.num_generated_tokens} tokens, ttft {s.ttft_s * 1e3:.1f} ms, "
          f"decode {s.decode_tokens_per_s:.1f} tokens/s, finish: {pipe.last_result.finish_reason}]", file=sys.stderr)
    return 0


def cmd_profile(args) -> int:
    from .runtime import Pipeline
    from .runtime.plot import check_plot_path
    from .runtime.profile import profile

    if args.plot:
        check_plot_path(args.plot)
    pipe = Pipeline.load(args.model, backend=args.backend, verify=not args.no_verify, threads=args.threads,
                         preprocess=args.preprocess)
    prompt, images = _prompt_and_images(args)
    report = profile(pipe, prompt, images, runs=args.runs, warmup=args.warmup, max_new_tokens=args.max_new_tokens)
    print(report.table())
    if args.json:
        Path(args.json).write_text(report.to_json())
        print(f"wrote {args.json}")
    if args.trace:
        from .runtime.trace import write_trace

        write_trace(report.runs, args.trace)
        print(f"wrote {args.trace} (open it in https://ui.perfetto.dev)")
    if args.plot:
        from .runtime.plot import write_plot

        write_plot(report.as_dict(), args.plot)
        print(f"wrote {args.plot}")
    return 0


def cmd_build(args) -> int:
    from .export.tensorrt.command import run_build

    print(run_build(args))
    return 0


def cmd_bench(args) -> int:
    import json

    from .bench import format_bench, run_bench

    if args.against != "transformers":
        raise ValueError(f"--against {args.against!r} is not supported; choose 'transformers'")
    report = run_bench(args.model, args.model_dir, args.image, args.prompt, args.runs, args.max_new_tokens)
    print(format_bench(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.out)


def cmd_eval(args) -> int:
    import json

    from .examples.evaluate import evaluate
    from .runtime import Pipeline

    pipe = Pipeline.load(args.model, backend=args.backend, verify=not args.no_verify, threads=args.threads,
                         preprocess=args.preprocess)
    report = evaluate(pipe, args.suite, n=args.n, images=args.images)
    print(report.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=2))
        print(f"wrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="vlmforge", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    e = sub.add_parser("export", help="Hugging Face VLM folder → ONNX graphs + manifest")
    e.add_argument("model_dir")
    e.add_argument("-o", "--out", required=True)
    e.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    e.add_argument("--no-check", action="store_true", help="skip the ONNX-vs-torch check of each graph")
    e.add_argument("--lm-head", default="full", choices=("full", "screened"),
                   help="screened: greedy's argmax decided exactly from an INT8 screen of the LM head (fewer bytes "
                        "per decode step; greedy only, ONNX Runtime only; README 'Screened LM head')")
    e.set_defaults(func=cmd_export)

    def runtime_args(q, max_new=64):
        q.add_argument("model", help="an exported folder (with manifest.json)")
        q.add_argument("--image", action="append", help="image file; repeat for several images")
        q.add_argument("--prompt", default=DEFAULT_PROMPT, help="prompt with one <image> per image ('\\n' allowed)")
        q.add_argument("--max-new-tokens", type=int, default=max_new)
        q.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
        q.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of the artifacts")
        q.add_argument("--backend", default="auto", choices=BACKENDS,
                       help="auto: tensorrt when the folder has engines and TensorRT + a GPU are here, else onnxruntime")
        q.add_argument("--preprocess", default="auto", choices=PREPROCESS,
                       help="tiling kernel: auto = CUDA into the vision engine's input with tensorrt, else the CPU kernel (C, or NumPy without a compiler)")

    r = sub.add_parser("run", help="generate text for an image and a prompt")
    runtime_args(r)
    r.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    r.add_argument("--temperature", type=float)
    r.add_argument("--top-k", type=int)
    r.add_argument("--top-p", type=float)
    r.add_argument("--repetition-penalty", type=float)
    r.add_argument("--seed", type=int)
    r.add_argument("--stop", action="append", help="stop string; repeatable")
    r.set_defaults(func=cmd_run)

    f = sub.add_parser("profile", help="per-stage latency over several runs")
    runtime_args(f, max_new=32)
    f.add_argument("--runs", type=int, default=5)
    f.add_argument("--warmup", type=int, default=1)
    f.add_argument("--json", help="write the report as JSON here")
    f.add_argument("--trace", help="write a Chrome trace (Perfetto) here: one track per stage")
    f.add_argument("--plot", help="write a PNG chart of where the time goes here")
    f.set_defaults(func=cmd_profile)

    b = sub.add_parser("build", help="TensorRT engines for an exported folder (or the trtexec script for them)")
    b.add_argument("model", help="an exported folder (with manifest.json)")
    b.add_argument("--backend", default="tensorrt", help="what to build for (tensorrt)")
    b.add_argument("--precision", help="fp32|fp16|int8|int8-weight|int4-weight, or per graph: vision=fp16,connector=fp16,llm=fp16")
    b.add_argument("--max-tiles", type=int, help="most tiles per vision call (default: what preprocessing can produce)")
    b.add_argument("--max-context", type=int, help="most tokens the LLM engine holds (default: the model's context)")
    b.add_argument("--workspace-gb", type=float, default=4.0, help="TensorRT workspace memory pool limit")
    b.add_argument("--timing-cache", help="timing cache file, read and updated (speeds up rebuilds)")
    b.add_argument("--dla", help="graphs to place on the DLA, e.g. vision (Jetson; unsupported layers fall back to the GPU)")
    b.add_argument("--dla-core", type=int, default=0)
    b.add_argument("--emit-trtexec", metavar="SCRIPT", help="write the same builds as trtexec commands instead of building")
    b.add_argument("--adopt", action="store_true", help="record engines that the trtexec script built")
    b.set_defaults(func=cmd_build)

    bn = sub.add_parser("bench", help="the same model through transformers and vlmforge, stage by stage")
    bn.add_argument("model", help="an exported folder")
    bn.add_argument("--against", default="transformers")
    bn.add_argument("--model-dir", required=True, help="the Hugging Face checkpoint the export came from")
    bn.add_argument("--image")
    bn.add_argument("--prompt")
    bn.add_argument("--runs", type=int, default=3)
    bn.add_argument("--max-new-tokens", type=int, default=32)
    bn.add_argument("--json")
    bn.set_defaults(func=cmd_bench)

    d = sub.add_parser("demo", help="export a model, run it on pictures and print the profile")
    d.add_argument("--out", help="export into this folder and keep it")
    d.set_defaults(func=cmd_demo)

    v = sub.add_parser("eval", help="exact-match accuracy of an exported model on held-out questions")
    v.add_argument("model", help="an exported folder (with manifest.json)")
    v.add_argument("--suite", default="shapes", choices=("shapes",), help="question set (shapes: the default model's task)")
    v.add_argument("--n", type=int, default=500, help="number of questions (question types cycle)")
    v.add_argument("--images", default="original", choices=("original", "blank", "shuffled"),
                   help="control: blank pictures or another question's picture instead of the right one")
    v.add_argument("--json", help="write the report (accuracy, n, per_type, ...) as JSON here")
    v.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    v.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of the artifacts")
    v.add_argument("--backend", default="auto", choices=BACKENDS)
    v.add_argument("--preprocess", default="auto", choices=PREPROCESS)
    v.set_defaults(func=cmd_eval)

    from .calibration.commands import add_commands

    add_commands(sub)  # calibrate, quantize, verify (issue #5)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError, TypeError) as e:
        print(f"vlmforge {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
