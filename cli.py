"""The ``vlmforge`` command line: export, build, run, profile, serve, demo, eval, calibrate, quantize, verify."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BACKENDS = ("auto", "onnxruntime", "tensorrt", "onnxruntime-cuda", "onnxruntime-tensorrt")  # = runtime.backends.BACKENDS
PREPROCESS = ("auto", "cpu", "gpu")  # = runtime.preprocess.MODES
DEFAULT_QUESTION = "What is in the picture?"
# what the export stack needs beyond the runtime (pyproject's "export" extra)
EXPORT_MODULES = ("torch", "transformers", "onnx", "onnxscript", "safetensors")
SERVE_MODULES = ("fastapi", "uvicorn")  # pyproject's "serve" extra


def needs_export_stack(func):
    """Commands that export or quantise: on a runtime-only install, say so in one line."""

    def run(args) -> int:
        import importlib.util

        missing = [m for m in EXPORT_MODULES if importlib.util.find_spec(m) is None]
        if missing:
            raise VlmforgeCLIError(f"this command needs the export stack ({', '.join(missing)} not installed): "
                                   'pip install torch==2.13.0 "vlmforge[export]"')
        return func(args)

    return run


class VlmforgeCLIError(Exception):
    """A command cannot run here; the message says what to install or change."""


@needs_export_stack
def cmd_export(args) -> int:
    from .export import export_model

    manifest = export_model(args.model_dir, args.out, overwrite=args.overwrite, check=not args.no_check, lm_head=args.lm_head,
                            max_pixels=args.max_pixels, kv_layout=args.kv_layout)
    size = sum(a.bytes for a in manifest.artifacts.values())
    print(f"exported {manifest.family} ({manifest.architecture}) to {args.out}: "
          f"{len(manifest.artifacts)} artifacts, {size / 1e6:.1f} MB; KV cache layout {manifest.llm.cache_layout}")
    return 0


def _load(args):
    from .runtime import Pipeline

    verify = False if args.no_verify else "full" if getattr(args, "verify_full", False) else True
    return Pipeline.load(args.model, backend=args.backend, verify=verify, threads=args.threads,
                         preprocess=args.preprocess, max_image_pixels=args.max_image_pixels)


def _prompt_and_images(args, pipe):
    """--prompt is a plain question put in one user turn of the model's chat template (images, then
    videos, first); --raw sends it verbatim, placeholders and all. → (prompt, images, videos)."""
    images, videos = list(args.image or []), list(args.video or [])
    text = None if args.prompt is None else args.prompt.replace("\\n", "\n")
    if args.raw:
        if text is None or args.system:
            raise ValueError("--raw sends --prompt verbatim: give --prompt, and write any system text into it (no --system)")
        return text, images, videos
    question = DEFAULT_QUESTION if text is None else text
    return pipe.turn_prompt(question, len(images), args.system, num_videos=len(videos)), images, videos


def cmd_run(args) -> int:
    pipe = _load(args)
    prompt, images, videos = _prompt_and_images(args, pipe)
    sampling = dict(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed,
                    repetition_penalty=args.repetition_penalty, do_sample=args.sample or None)
    media = dict(videos=videos, video_fps=args.video_fps, sample_fps=args.sample_fps) if videos else {}
    for piece in pipe.stream(prompt, images=images, max_new_tokens=args.max_new_tokens, stop=args.stop,
                             max_pixels=args.max_pixels, **media, **sampling):
        print(piece, end="", flush=True)
    print()
    for b in pipe.last_result.boxes:  # grounding models: the answer's boxes in the picture's pixels
        print(f"box {b.label or '-'}: ({b.x1:.0f}, {b.y1:.0f}) – ({b.x2:.0f}, {b.y2:.0f}) in image {b.image + 1}")
    s = pipe.last_result.stats
    print(f"[{s.num_generated_tokens} tokens, ttft {s.ttft_s * 1e3:.1f} ms, "
          f"decode {s.decode_tokens_per_s:.1f} tokens/s, finish: {pipe.last_result.finish_reason}]", file=sys.stderr)
    return 0


def cmd_profile(args) -> int:
    from .runtime.plot import check_plot_path
    from .runtime.profile import profile

    if args.plot:
        check_plot_path(args.plot)
    pipe = _load(args)
    prompt, images, videos = _prompt_and_images(args, pipe)
    report = profile(pipe, prompt, images, runs=args.runs, warmup=args.warmup, max_new_tokens=args.max_new_tokens,
                     videos=videos, video_fps=args.video_fps)
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


@needs_export_stack
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


@needs_export_stack
def cmd_demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.out)


def cmd_eval(args) -> int:
    import json

    from .examples.evaluate import evaluate
    pipe = _load(args)
    report = evaluate(pipe, args.suite, n=args.n, images=args.images)
    print(report.table())
    if args.json:
        Path(args.json).write_text(json.dumps(report.as_dict(), indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_serve(args) -> int:
    import importlib.util

    missing = [m for m in SERVE_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise VlmforgeCLIError(f"vlmforge serve needs {' and '.join(missing)} (not installed): "
                               'pip install "vlmforge[serve]"')
    for name in ("max_body_mb", "max_image_mb"):
        if not getattr(args, name) > 0:
            raise ValueError(f"--{name.replace('_', '-')} must be a positive number of megabytes, got {getattr(args, name)}")
    import uvicorn

    from .runtime.server.app import create_app

    pipe = _load(args)
    pipe.start_engine(max_batch=args.max_batch, max_waiting=args.max_queue)
    name = args.model_name or Path(args.model).resolve().name
    app = create_app(pipe, name, max_body_bytes=int(args.max_body_mb * 2**20), allowed_media_dir=args.allowed_media_dir,
                     max_image_bytes=int(args.max_image_mb * 2**20))
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"note: listening on {args.host}, not only on this machine: anyone who reaches it can use the model",
              file=sys.stderr)
    print(f"serving {name!r} at http://{args.host}:{args.port}/v1 (OpenAI API) and http://{args.host}:{args.port}/ "
          "(a page to try it)", file=sys.stderr)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="info", timeout_graceful_shutdown=5)
    finally:
        pipe.engine.close()
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
    e.add_argument("--max-pixels", type=int, help="native-resolution models (Qwen2-VL): the bound of the image budget "
                   "(default: the processor's max_pixels); runs may ask for less")
    e.add_argument("--kv-layout", default="auto", choices=("auto", "concat"),
                   help="auto: the append KV cache (the graph returns only the new keys/values; the runtime's cache "
                        "stays where it is) wherever the decoder allows it; concat: every step's graph returns "
                        "past + new (README 'KV cache')")
    e.set_defaults(func=cmd_export)

    def runtime_args(q, max_new=64):
        q.add_argument("model", help="an exported folder (with manifest.json)")
        q.add_argument("--image", action="append", help="image file; repeat for several images")
        q.add_argument("--video", action="append", help="video: a folder of frames or a video file (needs "
                       "vlmforge[video]); native-resolution models (Qwen2-VL line)")
        q.add_argument("--video-fps", type=float, default=2.0, help="the rate the given frames were taken at")
        q.add_argument("--sample-fps", type=float, help="sample the video's frames down to this rate first "
                       "(as transformers' video processor does with fps)")
        q.add_argument("--prompt", help=f"the question, put in one user turn of the model's chat template with the "
                       f"images first (default: {DEFAULT_QUESTION!r}); '\\n' allowed")
        q.add_argument("--system", help="a system turn before it (where the chat template has one)")
        q.add_argument("--raw", action="store_true",
                       help="send --prompt verbatim, no chat template: it then holds one <image> per image")
        q.add_argument("--max-new-tokens", type=int, default=max_new)
        q.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
        q.add_argument("--max-image-pixels", type=int, help="refuse larger pictures, read from the file header "
                       "before decoding (default: the export's limit, 50 MP)")
        q.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of the artifacts")
        q.add_argument("--verify-full", action="store_true", help="re-read every artifact for its SHA-256 (by default "
                       "one verified before and unchanged since is trusted)")
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
    r.add_argument("--max-pixels", type=int, help="native-resolution models: this run's image budget (at most the export's)")
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
    v.add_argument("--max-image-pixels", type=int)
    v.set_defaults(func=cmd_eval)

    sv = sub.add_parser("serve", help="an OpenAI-compatible HTTP server (and a page to try it) over the batched engine")
    sv.add_argument("model", help="an exported folder (with manifest.json)")
    sv.add_argument("--host", default="127.0.0.1", help="address to listen on (default: this machine only)")
    sv.add_argument("--port", type=int, default=8000)
    sv.add_argument("--model-name", help="the name clients ask for in 'model' (default: the folder's name)")
    sv.add_argument("--max-batch", type=int, default=8, help="requests decoded together in one step")
    sv.add_argument("--max-queue", type=int, default=64, help="requests that may wait; beyond that: 503")
    sv.add_argument("--max-body-mb", type=float, default=20.0, help="largest request body (413 beyond)")
    sv.add_argument("--max-image-mb", type=float, default=10.0, help="largest picture, encoded (413 beyond)")
    sv.add_argument("--allowed-media-dir", help="image_url may name local files (paths, file://) inside this folder "
                    "only (default: data URLs only; http(s) URLs are never fetched)")
    sv.add_argument("--max-image-pixels", type=int, help="refuse larger pictures, read from the header (default: the "
                    "export's limit, 50 MP)")
    sv.add_argument("--threads", type=int, default=None, help="intra-op threads (default: physical cores)")
    sv.add_argument("--no-verify", action="store_true", help="skip the SHA-256 check of the artifacts")
    sv.add_argument("--backend", default="auto", choices=BACKENDS)
    sv.add_argument("--preprocess", default="auto", choices=PREPROCESS)
    sv.set_defaults(func=cmd_serve)

    from .calibration.commands import add_commands

    add_commands(sub, needs_export_stack)  # calibrate, quantize, verify (issue #5)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ValueError, OSError, TypeError, VlmforgeCLIError) as e:
        print(f"vlmforge {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM while an output folder is written (export/atomic.py)
        print(f"vlmforge {args.command}: interrupted; nothing was left half-written", file=sys.stderr)
        return 130


def _one_line(e: BaseException) -> str:
    """OSError's str carries errno noise; say what and where."""
    if isinstance(e, OSError) and e.strerror and e.filename:
        return f"{e.strerror}: {e.filename}"
    return str(e)


if __name__ == "__main__":
    sys.exit(main())
