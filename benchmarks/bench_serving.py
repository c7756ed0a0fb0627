"""Serving benchmark on the realistic bench model (CLIP-ViT-L/14-336 + Qwen2-0.5B-like decoder,
random weights, w4 LLM): what batching and the caches buy on this machine.

    python benchmarks/bench_serving.py --work /tmp/vlmforge-bench-serving [--tokens 64] [--build-only]

Builds once (kept in --work): the checkpoint (``export/bench_model.py``), its fp32 export and a
copy with the LLM weight-only int4 (``--precision llm=w4``). Then, in one process, with nothing
else running:

1. decode throughput — generated tokens per second of decode steps, all streams together — with
   1, 2, 4 and 8 requests in flight (``max_batch``) against the same requests one after another
   (``max_batch=1``); each request is a different picture (~600-token prompt) decoding ``--tokens``
   tokens. Also the wall time of the whole set, prefill included.
   "full batch": the same over only the steps where all ``streams`` rows decoded together.
2. TTFT of a second chat turn: with the kept prefix (``Pipeline.chat``) and cold (the same messages
   through ``generate``; its picture still from the vision cache, then with no cache at all).
3. TTFT of a request whose picture is in the vision cache against one whose picture is not.

Random weights: the timings are real, the text is not.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np

QUESTION = "Describe the picture in detail."


def build(work: Path) -> Path:
    from vlmforge.calibration import quantize_model
    from vlmforge.export import export_model
    from vlmforge.export.bench_model import make_bench_llava

    hf, fp32, w4 = work / "hf", work / "fp32", work / "w4"
    for label, fn, done in (("checkpoint", lambda: make_bench_llava(hf), hf / "config.json"),
                            ("fp32 export", lambda: export_model(hf, fp32, check=False), fp32 / "manifest.json"),
                            ("w4 LLM", lambda: quantize_model(fp32, w4, "llm=w4"), w4 / "manifest.json")):
        if not done.exists():
            start = time.perf_counter()
            fn()
            print(f"[{label}: {time.perf_counter() - start:.0f} s]", flush=True)
    return w4


def pictures(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (336, 448, 3), dtype=np.uint8) for _ in range(n)]


def throughput(pipe, images, tokens: int, streams: int) -> dict:
    """The requests prepared first (vision outside the clock), then decoded ``streams`` at a time."""
    from vlmforge.runtime.serving import Request

    engine = pipe.start_engine(max_batch=streams, prefix_cache_bytes=0)
    prompt = pipe.turn_prompt(QUESTION, 1)
    seqs = [pipe.sequence(Request(prompt, [img], max_new_tokens=tokens, ignore_eos=True)) for img in images]
    start = time.perf_counter()
    for seq in seqs:
        engine.submit(seq)
    for seq in seqs:
        seq.done.wait()
    wall = time.perf_counter() - start
    c = engine.counters
    full = engine.by_rows.get(streams, [0, 0.0])
    return {"streams": streams, "decode_tokens_per_s": c["decoded_rows"] / c["decode_s"],
            "full_batch_tokens_per_s": streams * full[0] / full[1] if full[1] else 0.0, "full_batch_steps": full[0],
            "mean_rows_per_step": c["decoded_rows"] / c["decode_steps"], "wall_s": wall,
            "tokens": sum(len(s.result.token_ids) for s in seqs),
            "prompt_tokens": seqs[0].result.stats.num_prompt_tokens}


def chat_ttft(pipe, image, tokens: int) -> dict:
    pipe.start_engine()
    chat = pipe.chat(max_new_tokens=tokens, ignore_eos=True)
    chat.send(QUESTION, images=[image])
    second = chat.send("What is on the left side?")
    history = chat.messages[:-1]
    warm = pipe.generate(messages=history, images=[image], max_new_tokens=1)
    pipe.vision_cache.clear()
    cold = pipe.generate(messages=history, images=[image], max_new_tokens=1)
    return {"prompt_tokens": second.stats.num_prompt_tokens, "cached_tokens": second.stats.cached_prompt_tokens,
            "ttft_reused_s": second.stats.ttft_s, "ttft_cold_vision_cached_s": warm.stats.ttft_s,
            "ttft_cold_s": cold.stats.ttft_s}


def vision_cache_ttft(pipe, image) -> dict:
    prompt = pipe.turn_prompt(QUESTION, 1)
    pipe.vision_cache.clear()
    miss = [pipe.generate(prompt, images=[image], max_new_tokens=1) for _ in range(1)][0]
    hits = [pipe.generate(prompt, images=[image], max_new_tokens=1) for _ in range(3)]
    return {"ttft_miss_s": miss.stats.ttft_s, "ttft_hit_s": statistics.median(h.stats.ttft_s for h in hits),
            "hits": sum(h.stats.vision_cache_hits for h in hits)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", default="/tmp/vlmforge-bench-serving")
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    folder = build(work)
    if args.build_only:
        return
    from vlmforge.runtime import Pipeline

    pipe = Pipeline.load(folder, backend="onnxruntime", verify=False)
    images = pictures(8)
    throughput(pipe, images[:1], 8, 1)  # warm-up
    report = {"sequential": throughput(pipe, images, args.tokens, 1)}
    for streams in (2, 4, 8):
        report[f"{streams} streams"] = throughput(pipe, images, args.tokens, streams)
    base = report["sequential"]["decode_tokens_per_s"]
    print(f"{'':12} {'decode tok/s':>12} {'× sequential':>12} {'rows/step':>9} {'full-batch tok/s':>16} "
          f"{'× sequential':>12} {'wall s (8 requests)':>20}")
    for label, r in report.items():
        print(f"{label:12} {r['decode_tokens_per_s']:12.1f} {r['decode_tokens_per_s'] / base:12.2f} "
              f"{r['mean_rows_per_step']:9.2f} {r['full_batch_tokens_per_s']:16.1f} "
              f"{r['full_batch_tokens_per_s'] / base:12.2f} {r['wall_s']:20.1f}")
    report["chat"] = chat_ttft(pipe, images[0], 16)
    report["vision_cache"] = vision_cache_ttft(pipe, images[1])
    print(json.dumps({k: report[k] for k in ("chat", "vision_cache")}, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
