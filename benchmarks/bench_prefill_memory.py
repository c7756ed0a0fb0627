"""Peak memory and time of a long prefill, whole against in chunks (``decode.prefill``'s ``chunk``).

    python benchmarks/bench_prefill_memory.py EXPORT_DIR [--tokens 2400] [--chunks 0,512,256]

Each configuration runs in its own process (peak RSS is then its own): load the pipeline, note
VmHWM, run one generation of a prompt of about ``--tokens`` tokens (one picture and filler text)
with 2 new tokens, note VmHWM and the prefill time. Chunk 0: the whole prompt in one step.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def vm_hwm_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def child(model: str, tokens: int, chunk: int) -> dict:
    import numpy as np

    from vlmforge.runtime import Pipeline
    from vlmforge.runtime.stats import NullTimer

    pipe = Pipeline.load(model, backend="onnxruntime", verify=False, vision_cache_bytes=0)
    loaded = vm_hwm_mb()
    pipe.prefill_chunk = chunk or None
    image = np.random.default_rng(0).integers(0, 256, (336, 448, 3), dtype=np.uint8)

    slots = pipe.encode_image(image, NullTimer()).shape[0]

    def count(words: int) -> int:  # prompt tokens of the picture and ``words`` filler words
        return len(pipe.prepare_prompt(pipe.turn_prompt("word " * words, 1), None, 1, [slots]).input_ids)

    per_word = (count(108) - count(8)) / 100
    words = 8 + int(max(0, tokens - count(8)) / per_word)
    result = pipe.generate(pipe.turn_prompt("word " * words, 1), images=[image], max_new_tokens=2, ignore_eos=True)
    return {"chunk": chunk, "prompt_tokens": result.stats.num_prompt_tokens, "rss_after_load_mb": loaded,
            "peak_rss_mb": vm_hwm_mb(), "prefill_s": result.stats.stage_total("prefill")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--tokens", type=int, default=2400)
    parser.add_argument("--chunks", default="0,512,256")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.model, args.tokens, args.child)))
        return
    print(f"{'chunk':>6} {'prompt':>7} {'RSS after load MB':>18} {'peak RSS MB':>12} {'prefill s':>10}")
    for chunk in (int(c) for c in args.chunks.split(",")):
        out = subprocess.run([sys.executable, __file__, args.model, "--tokens", str(args.tokens), "--child", str(chunk)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{r['chunk'] or 'whole':>6} {r['prompt_tokens']:>7} {r['rss_after_load_mb']:>18.0f} "
              f"{r['peak_rss_mb']:>12.0f} {r['prefill_s']:>10.2f}")


if __name__ == "__main__":
    main()
