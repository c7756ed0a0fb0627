"""Long contexts on the realistic bench model: decode step time against context, prefill time and
peak memory against prompt length, load time — vlmforge's append and concat KV layouts at FP32 /
w8 / w4 / w8a8 beside transformers FP32 and, where installed, llama.cpp and onnxruntime-genai.

    python benchmarks/bench_long_context.py --work /tmp/vlmforge-bench [--contexts 600,2400,8000]
                                            [--prefill 600,2400] [--rows fp32,fp32-concat,w4,w4-concat,w8,w8a8,w4-kv8,transformers]
                                            [--rows ...,llama-f32,llama-q8_0,llama-q4_k_m,genai-fp32,genai-int4]

The model is bench_precision.py's (CLIP-ViT-L/14-336 + a Qwen2-0.5B-shaped decoder, random
weights; built once into --work). Only the LLM is measured here: the picture's tokens are the
same work as any others. Each (row, measurement) runs in its own process, rows alternating, so
peak RSS is that configuration's alone and no row runs warm on another's page cache.

* decode: the cache is filled with ``context`` tokens of random keys/values (a decode step costs
  the same whatever they hold — no 8,000-token prefill needed to time it), then the median of
  ``--steps`` steps. The bound: (LLM weight bytes + KV bytes at that context) per token over the
  bandwidth ``vlmforge.bench.memory_bandwidth_gbs`` measures — decode's % of that bound is printed.
* prefill: a ``prompt``-token prompt of random embeddings from an empty cache, the runtime's
  chunking (decode.PREFILL_CHUNK), median of ``--runs``; peak RSS (VmHWM) of that process.
* load: ``Pipeline.load`` twice in one process (the second with ONNX Runtime's optimised graphs
  from the load cache), hashes checked.

Peer rows (peers.py): llama.cpp F32 / Q8_0 / Q4_K_M through llama-cpp-python (``llama-f32``,
``llama-q8_0``, ``llama-q4_k_m``) and onnxruntime-genai fp32 / int4 from its model builder
(``genai-fp32``, ``genai-int4``), all converted from the same decoder weights (the checkpoint's
language model + LM head, cached under ``--work``/peers), on the same thread count. They are in the
default rows when their packages are installed (``pip install llama-cpp-python gguf
onnxruntime-genai``); otherwise each is skipped with a printed message. Same measurements, with one
difference: neither runtime takes a ready-made cache, so decode at N first prefills N random token
ids (untimed), then times single-token steps. Random weights: the timings are real, the text is not.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import peers  # noqa: E402 — llama.cpp and onnxruntime-genai rows
from bench_precision import peak_rss_mb, step  # noqa: E402 — the same checkpoint and folders

ROWS = {  # row → (folder under --work built by prepare_rows, or "transformers")
    "fp32": "fp32", "fp32-concat": "fp32-concat", "w8": "w8", "w4": "w4", "w4-concat": "w4-concat",
    "w8a8": "w8a8", "w4-kv8": "w4-kv8", "transformers": "transformers",
    **{row: "peers" for row in peers.ROWS},  # built by peers.prepare under --work/peers
}
WEIGHT_ONLY = {"w8": "llm=w8", "w4": "llm=w4", "w8a8": "llm=w8a8"}  # w8a8: int8 activations too (per token)


def prepare_rows(work: Path, rows: list[str]) -> dict[str, Path]:
    """bench_precision's checkpoint and fp32 export, a concat fp32 export, and llm-only w8/w4 of each."""
    from vlmforge.calibration import quantize_model
    from vlmforge.export import export_model
    from vlmforge.export.bench_model import make_bench_llava

    hf, folders = work / "hf", {"fp32": work / "fp32", "transformers": work / "hf", "fp32-concat": work / "fp32-concat"}
    step("checkpoint", lambda: make_bench_llava(hf), done=(hf / "config.json").exists())
    for layout, folder in (("auto", folders["fp32"]), ("concat", folders["fp32-concat"])):
        step(f"fp32 export ({layout})", lambda f=folder, kv=layout: export_model(hf, f, check=False, kv_layout=kv),
             done=(folder / "manifest.json").exists())
    for row in rows:
        base, _, variant = row.partition("-")  # variant: "concat" (that layout) or "kv8" (quantize --kv-cache int8)
        if base in WEIGHT_ONLY:
            src = work / ("fp32-concat" if variant == "concat" else "fp32")
            folders[row] = work / f"long-{row}"
            kv = "int8" if variant == "kv8" else "float"
            step(f"quantise {row}", lambda s=src, d=folders[row], plan=WEIGHT_ONLY[base], kv=kv:
                 quantize_model(s, d, plan, kv_cache=kv), done=(folders[row] / "manifest.json").exists())
    folders.update(peers.prepare(work, hf, [row for row in rows if row in peers.ROWS]))
    return folders


# -- one measurement (in a child process) ---------------------------------------------------------
def fill_cache(decoder, spec, context: int, rng) -> None:
    """``context`` tokens of random keys/values in the decoder's cache, as a prefill would leave it
    (an int8 cache: random int8 values and positive scales)."""
    import onnxruntime as ort

    from vlmforge.runtime.kv_cache import cache_shapes

    def random(last: int, dtype: str) -> np.ndarray:
        x = rng.standard_normal((1, spec.num_kv_heads, context, last), dtype=np.float32)
        return (x * 40).clip(-127, 127).astype(dtype) if dtype == "int8" else (np.abs(x) / 40 if last == 1 else x).astype(dtype)

    new = [random(last, dtype) for last, dtype in cache_shapes(spec)]
    decoder.reset()
    if spec.cache_layout == "append":
        decoder.cache.append(new)
    else:
        decoder.cache.values = [ort.OrtValue.ortvalue_from_numpy(a) for a in new]
        decoder.cache.num_tokens = context


def measure_decode(folder: Path, context: int, steps: int) -> dict:
    from vlmforge.bench import _llm_weight_bytes, memory_bandwidth_gbs
    from vlmforge.runtime import Pipeline

    pipe = Pipeline.load(folder, backend="onnxruntime", verify=False)
    spec, rng = pipe.manifest.llm, np.random.default_rng(0)
    fill_cache(pipe.decoder, spec, context, rng)
    embeds = np.asarray(pipe.embed_table[rng.integers(0, spec.vocab_size, steps + 2)], dtype=np.float32)
    times = []
    for i in range(steps + 2):  # two warm-up steps
        start = time.perf_counter()
        pipe.decoder.step(embeds[i][None, None], np.array([[context + i]], dtype=np.int64))
        times.append(time.perf_counter() - start)
    step_s = float(np.median(times[2:]))
    per_token = _llm_weight_bytes(pipe) + spec.cache_bytes(context)
    bandwidth = memory_bandwidth_gbs()
    return {"step_ms": 1e3 * step_s, "tokens_per_s": 1 / step_s, "bytes_per_token": per_token,
            "bandwidth_gbs": bandwidth, "bound_tokens_per_s": bandwidth * 1e9 / per_token,
            "kv_mb": spec.cache_bytes(context) / 1e6}


def measure_prefill(folder: Path, prompt: int, runs: int) -> dict:
    from vlmforge.runtime import Pipeline
    from vlmforge.runtime.decode import prefill
    from vlmforge.runtime.stats import NullTimer

    pipe = Pipeline.load(folder, backend="onnxruntime", verify=False)
    loaded = peak_rss_mb()
    rng = np.random.default_rng(0)
    embeds = np.asarray(pipe.embed_table[rng.integers(0, pipe.manifest.llm.vocab_size, prompt)], np.float32)[None]
    times = []
    for _ in range(runs):
        pipe.decoder.reset()
        start = time.perf_counter()
        prefill(pipe.decoder, embeds, NullTimer(), chunk=pipe.prefill_chunk)
        times.append(time.perf_counter() - start)
    return {"prefill_s": float(np.median(times)), "rss_after_load_mb": loaded, "peak_rss_mb": peak_rss_mb(),
            "kv_mb": pipe.manifest.llm.cache_bytes(prompt) / 1e6}


def measure_load(folder: Path) -> dict:
    from vlmforge.runtime import Pipeline

    out = {}
    for label in ("first_load_s", "load_s"):
        start = time.perf_counter()
        Pipeline.load(folder, backend="onnxruntime")
        out[label] = time.perf_counter() - start
    return out


def transformers_decode(hf: Path, context: int, steps: int) -> dict:
    """transformers FP32 (SDPA attention), the same random cache length, median step."""
    import torch
    from transformers import AutoModelForImageTextToText
    from transformers.cache_utils import DynamicCache

    from vlmforge.runtime.session import physical_cores

    torch.set_num_threads(physical_cores())
    model = AutoModelForImageTextToText.from_pretrained(hf, dtype=torch.float32, attn_implementation="sdpa").eval()
    lm, text = model.model.language_model, model.config.text_config
    heads = text.num_attention_heads
    kv, hd = text.num_key_value_heads, getattr(text, "head_dim", None) or text.hidden_size // heads
    cache = DynamicCache()
    for i in range(text.num_hidden_layers):
        cache.update(torch.randn(1, kv, context, hd), torch.randn(1, kv, context, hd), i)
    times = []
    with torch.no_grad():
        for i in range(steps + 2):
            x = torch.randn(1, 1, text.hidden_size)
            start = time.perf_counter()
            out = lm(inputs_embeds=x, position_ids=torch.tensor([[context + i]]), past_key_values=cache, use_cache=True)
            model.lm_head(out.last_hidden_state)
            times.append(time.perf_counter() - start)
    step_s = float(np.median(times[2:]))
    return {"step_ms": 1e3 * step_s, "tokens_per_s": 1 / step_s}


def transformers_prefill(hf: Path, prompt: int, runs: int) -> dict:
    import torch
    from transformers import AutoModelForImageTextToText

    from vlmforge.runtime.session import physical_cores

    torch.set_num_threads(physical_cores())
    model = AutoModelForImageTextToText.from_pretrained(hf, dtype=torch.float32, attn_implementation="sdpa").eval()
    loaded = peak_rss_mb()
    x = torch.randn(1, prompt, model.config.text_config.hidden_size)
    times = []
    with torch.no_grad():
        for _ in range(runs):
            start = time.perf_counter()
            out = model.model.language_model(inputs_embeds=x, use_cache=True)
            model.lm_head(out.last_hidden_state[:, -1:])
            times.append(time.perf_counter() - start)
    return {"prefill_s": float(np.median(times)), "rss_after_load_mb": loaded, "peak_rss_mb": peak_rss_mb()}


def child(kind: str, row: str, folder: Path, n: int, args) -> dict:
    if row in peers.ROWS:
        return peers.measure(kind, row, folder, n, args.steps, args.runs)
    if row == "transformers":
        return transformers_decode(folder, n, args.steps) if kind == "decode" else (
            transformers_prefill(folder, n, args.runs) if kind == "prefill" else {})
    if kind == "decode":
        return measure_decode(folder, n, args.steps)
    return measure_prefill(folder, n, args.runs) if kind == "prefill" else measure_load(folder)


def run_child(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"measurement {argv} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- report ----------------------------------------------------------------------------------------
def report(results: dict, contexts: list[int], prompts: list[int]) -> str:
    lines = ["decode (random cache of N tokens; median step)",
             "| row | " + " | ".join(f"{c} tok/s (step vs {contexts[0]}, % of bound)" for c in contexts) + " |",
             "|---|" + "---|" * len(contexts)]
    for row, r in results.items():
        first = r["decode"][contexts[0]]["step_ms"]
        cells = []
        for c in contexts:
            d = r["decode"][c]
            bound = f", {100 * d['tokens_per_s'] / d['bound_tokens_per_s']:.0f}%" if "bound_tokens_per_s" in d else ""
            cells.append(f"{d['tokens_per_s']:.1f} ({d['step_ms'] / first:.2f}×{bound})")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    lines += ["", "prefill (random embeddings; median) and peak RSS of that process",
              "| row | " + " | ".join(f"{p} tok: s, peak RSS MB" for p in prompts) + " | ratio | load s (first) |",
              "|---|" + "---|" * (len(prompts) + 2)]
    for row, r in results.items():
        cells = [f"{r['prefill'][p]['prefill_s']:.2f}, {r['prefill'][p]['peak_rss_mb']:.0f}" for p in prompts]
        ratio = r["prefill"][prompts[-1]]["prefill_s"] / r["prefill"][prompts[0]]["prefill_s"]
        load = r.get("load") or {}
        load_cell = f"{load['load_s']:.2f} ({load['first_load_s']:.2f})" if load else "—"
        lines.append(f"| {row} | " + " | ".join(cells) + f" | {ratio:.2f}× | {load_cell} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/vlmforge-bench"))
    p.add_argument("--rows", help=f"comma-separated, of {', '.join(ROWS)}; default: all whose runtime is installed")
    p.add_argument("--contexts", default="600,2400,8000", help="decode: cache lengths")
    p.add_argument("--prefill", default="600,2400", help="prefill: prompt lengths")
    p.add_argument("--steps", type=int, default=16)
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--json", type=Path)
    p.add_argument("--child", nargs=4, metavar=("KIND", "ROW", "DIR", "N"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        kind, row, folder, n = args.child
        print(json.dumps(child(kind, row, Path(folder), int(n), args)))
        return 0
    rows = [r.strip() for r in args.rows.split(",")] if args.rows else list(ROWS)
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        p.error(f"unknown rows {unknown}; choose from {', '.join(ROWS)}")
    if any(r in peers.ROWS for r in rows):  # (imports the peers' packages: never in a measuring child)
        missing = {r: why for r, why in peers.available().items() if why and r in rows}
        for why in dict.fromkeys(missing.values()):  # each message once
            print(f"[skipped {', '.join(r for r in missing if missing[r] == why)}: {why}]", flush=True)
        rows = [r for r in rows if r not in missing]
        if not rows:
            print("[nothing left to measure]")
            return 0
    folders = prepare_rows(args.work, rows)
    contexts = [int(c) for c in args.contexts.split(",")]
    prompts = [int(c) for c in args.prefill.split(",")]
    results = {r: {"decode": {}, "prefill": {}} for r in rows}
    common = ["--steps", str(args.steps), "--runs", str(args.runs)]
    for kind, sizes in (("decode", contexts), ("prefill", prompts), ("load", [0])):
        for n in sizes:
            for row in rows:  # rows alternate within each size
                if kind == "load" and row == "transformers":
                    continue
                got = run_child([*common, "--child", kind, row, str(folders[row]), str(n)])
                if kind == "load":
                    results[row]["load"] = got
                else:
                    results[row][kind][n] = got
                print(f"[{kind} {row} {n}: {got}]", flush=True)
    print(report(results, contexts, prompts))
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
