"""Precision benchmark on a realistically sized LLaVA (random weights, real shapes).

    python benchmarks/bench_precision.py --work /tmp/vlmforge-bench --decode-tokens 16

Builds once (kept in --work and reused): the checkpoint (``export/bench_model.py``: CLIP-ViT-L/14-336
tower + MLP projector + a Qwen2-0.5B-like decoder — 24 layers, width 896, 14 heads, 2 KV heads,
intermediate 4864, vocab 151936, tied embeddings — random weights; or --checkpoint DIR, e.g. the
bundled default model), its fp32 export, a calibration cache (synthetic pictures through the real
pipeline) and one quantised folder per plan. Then measures, each in its own process so peak RSS is
that configuration's alone: artifact size, vision+connector latency, prefill latency of the
~600-token image prompt, decode tokens/s and peak resident memory — for transformers FP32
(PyTorch eager with eager attention: ``vlmforge bench``'s runner, timed the same way) and every
vlmforge precision, side by side, in one run. Ratios are against transformers measured in the
same run. Random weights: the timings are real, the text is not (``vlmforge verify`` for that).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

PROMPT = "USER: <image>\nDescribe the picture in detail. ASSISTANT:"
SCREENED = "screened-head"  # not a precision: the fp32 export made with --lm-head screened
PLANS = {  # row → --precision (weight-only rows keep the compute-bound vision and connector at int8)
    "fp32": None,
    "fp32 screened head": SCREENED,
    "fp16": "fp16",
    "int8": "int8",
    "w8": "vision=int8,connector=int8,llm=w8",
    "w4": "vision=int8,connector=int8,llm=w4",
}


# -- building ---------------------------------------------------------------------------------
def prepare(work: Path, plans: dict, calib_samples: int, checkpoint: Path | None) -> dict[str, Path]:
    """Checkpoint → fp32 export → calibration cache → one folder per plan (each step skipped when present)."""
    from PIL import Image

    from vlmforge.calibration import calibrate, quantize_model
    from vlmforge.calibration.samples import synthetic_images
    from vlmforge.export import export_model
    from vlmforge.export.bench_model import make_bench_llava

    hf, fp32 = work / "hf", work / "fp32"
    if checkpoint is not None and not hf.exists():
        hf.symlink_to(Path(checkpoint).resolve())
    step("checkpoint", lambda: make_bench_llava(hf), done=(hf / "config.json").exists())
    step("fp32 export", lambda: export_model(hf, fp32, check=False), done=(fp32 / "manifest.json").exists())
    images = work / "calib_images"
    if not images.exists():
        images.mkdir()
        for name, rgb in synthetic_images(calib_samples, seed=11, size=(336, 448)):
            Image.fromarray(rgb).save(images / f"{name}.png")
    step("calibration", lambda: print(calibrate(fp32, images, None, num_samples=calib_samples, decode_steps=1).summary()),
         done=(fp32 / "calibration.json").exists())
    folders = {}
    for label, plan in plans.items():
        folders[label] = fp32 if plan is None else work / plan.replace("=", "-").replace(",", "_")
        if plan == SCREENED:
            step(f"export {label}", lambda d=folders[label]: export_model(hf, d, check=False, lm_head="screened"),
                 done=(folders[label] / "manifest.json").exists())
        elif plan is not None:
            step(f"quantise {label}", lambda p=plan, d=folders[label]: quantize_model(fp32, d, p),
                 done=(folders[label] / "manifest.json").exists())
    return folders


def step(label: str, fn, done: bool) -> None:
    if done:
        print(f"[{label}: already built]", flush=True)
        return
    start = time.perf_counter()
    fn()
    print(f"[{label}: {time.perf_counter() - start:.0f} s]", flush=True)


# -- measuring (each in a child process) -----------------------------------------------------
def peak_rss_mb() -> float:
    """This process's high-water resident set (VmHWM: unlike ru_maxrss it restarts at exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def medians(times: dict) -> dict:
    """Per stage, the median over the timed runs (the first run is warm-up)."""
    return {stage: float(np.median(values[1:] if len(values) > 1 else values)) for stage, values in times.items()}


def measure_vlmforge(folder: Path, runs: int, decode_tokens: int) -> dict:
    """Whole generations through the pipeline (ONNX Runtime, CPU), timed per stage as ``vlmforge bench`` does."""
    from vlmforge.bench import _default_picture, _prompt_ids, ours_stage_times
    from vlmforge.runtime import Pipeline

    pipe = Pipeline.load(folder, backend="onnxruntime", verify=False, vision_cache_bytes=0)  # time every vision call
    image = _default_picture()
    times: dict[str, list] = {}
    for _ in range(runs + 1):
        result = pipe.generate(PROMPT, images=[image], max_new_tokens=decode_tokens + 1, ignore_eos=True)
        for stage, values in ours_stage_times(result.stats).items():
            times.setdefault(stage, []).append(float(np.median(values)) if values else 0.0)
    if pipe.manifest.graphs["llm"].precision == "fp32":  # transformers replays the same prompt ids
        np.save(folder.parent / "bench_input_ids.npy", _prompt_ids(pipe, PROMPT, image))
    m = medians(times)
    return {
        "vision_s": m["vision+connector"], "prefill_s": m["prefill"], "decode_tokens_per_s": 1 / m["decode_step"],
        "prompt_tokens": result.stats.num_prompt_tokens, "tokens": result.token_ids,
        "artifact_mb": sum(a.bytes for a in pipe.manifest.artifacts.values()) / 1e6, "peak_rss_mb": peak_rss_mb(),
    }


def measure_transformers(hf_dir: Path, runs: int, decode_tokens: int) -> dict:
    """transformers FP32, PyTorch eager (``vlmforge bench``'s runner): same picture, same prompt ids."""
    import torch

    from vlmforge.bench import HFRunner, _default_picture
    from vlmforge.runtime.session import physical_cores

    torch.set_num_threads(physical_cores())  # what ONNX Runtime gets
    runner = HFRunner(hf_dir)
    input_ids = np.load(hf_dir.parent / "bench_input_ids.npy")
    times: dict[str, list] = {}
    for _ in range(runs + 1):
        tokens, stage_times = runner.run(input_ids, _default_picture(), decode_tokens + 1)
        for stage, values in stage_times.items():
            times.setdefault(stage, []).append(float(np.median(values)) if values else 0.0)
    m = medians(times)
    return {
        "vision_s": m["vision+connector"], "prefill_s": m["prefill"], "decode_tokens_per_s": 1 / m["decode_step"],
        "prompt_tokens": int(len(input_ids)), "tokens": tokens,
        "artifact_mb": sum(f.stat().st_size for f in hf_dir.glob("*.safetensors")) / 1e6, "peak_rss_mb": peak_rss_mb(),
    }


def run_child(args: list[str]) -> dict:
    """One measurement in a fresh interpreter (clean peak RSS); its JSON is the last stdout line."""
    proc = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {args} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- report ---------------------------------------------------------------------------------------
def table(rows: dict[str, dict]) -> str:
    base = rows["transformers fp32"]
    head = ("| configuration | artifacts MB | vision+connector ms | prefill ms (tokens) | decode tok/s | peak RSS MB "
            "| decode × transformers | (vision+prefill) / transformers |")
    lines = [head, "|" + "---|" * 8]
    for label, r in rows.items():
        ratio = r["decode_tokens_per_s"] / base["decode_tokens_per_s"]
        share = (r["vision_s"] + r["prefill_s"]) / (base["vision_s"] + base["prefill_s"])
        lines.append(f"| {label} | {r['artifact_mb']:.0f} | {1e3 * r['vision_s']:.0f} | {1e3 * r['prefill_s']:.0f} "
                     f"({r['prompt_tokens']}) | {r['decode_tokens_per_s']:.1f} | {r['peak_rss_mb']:.0f} | {ratio:.2f}× | {share:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", type=Path, default=Path("/tmp/vlmforge-bench"), help="kept between runs (~15 GB)")
    p.add_argument("--plans", default=",".join(PLANS), help="comma-separated rows of: " + ", ".join(PLANS))
    p.add_argument("--runs", type=int, default=2, help="timed generations per configuration (after one warm-up)")
    p.add_argument("--decode-tokens", type=int, default=16, help="decode steps per generation (after the prefill token)")
    p.add_argument("--calib-samples", type=int, default=4)
    p.add_argument("--checkpoint", type=Path, help="benchmark this LLaVA checkpoint instead of building the random one")
    p.add_argument("--json", type=Path, help="write every measurement here")
    p.add_argument("--prepare-only", action="store_true", help="build the folders (e.g. at low priority) and stop")
    p.add_argument("--measure", nargs=2, metavar=("KIND", "DIR"), help=argparse.SUPPRESS)  # child process
    args = p.parse_args(argv)
    if args.measure:
        kind, folder = args.measure[0], Path(args.measure[1])
        result = (measure_transformers(folder, args.runs, args.decode_tokens) if kind == "transformers"
                  else measure_vlmforge(folder, args.runs, args.decode_tokens))
        print(json.dumps(result))
        return 0
    plans = {"fp32": None, **{k: PLANS[k] for k in args.plans.split(",") if k in PLANS}}  # fp32 first: it saves
    args.work.mkdir(parents=True, exist_ok=True)                                          # the prompt ids transformers replays
    folders = prepare(args.work, plans, args.calib_samples, args.checkpoint)
    if args.prepare_only:
        return 0
    rows = measure_all(args, folders, plans)
    print(f"\n{os.cpu_count()} CPUs, ONNX Runtime threads = physical cores; {args.decode_tokens} decode tokens\n")
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


def measure_all(args, folders: dict[str, Path], plans: dict) -> dict[str, dict]:
    common = ["--runs", str(args.runs), "--decode-tokens", str(args.decode_tokens)]
    rows = {}
    for label, folder in folders.items():
        name = f"vlmforge {label}" + (f" ({plans[label]})" if plans[label] and "=" in plans[label] else "")
        rows[name] = run_child(["--measure", "vlmforge", str(folder), *common])
        print(f"[measured {name}]", flush=True)
    return {"transformers fp32": run_child(["--measure", "transformers", str(args.work / "hf"), *common]), **rows}


if __name__ == "__main__":
    sys.exit(main())
