"""Does the profiler change what it measures? Alternate generations with the stage timers on
(``StageTimer``) and off (``NullTimer``) and compare end-to-end wall time with the run-to-run
noise of each. Usage: python benchmarks/bench_profiler_overhead.py EXPORTED_DIR [--runs 30] [--tokens 32]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vlmforge.runtime import Pipeline
from vlmforge.runtime.stats import NullTimer, StageTimer


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--runs", type=int, default=30)
    p.add_argument("--tokens", type=int, default=32)
    args = p.parse_args()
    pipe = Pipeline.load(args.model, verify=False, vision_cache_bytes=0)
    image = np.random.default_rng(0).integers(0, 256, (336, 448, 3), dtype=np.uint8)
    prompt = "USER: <image>\nWhat is in the picture? ASSISTANT:"
    times = {"timers on": [], "timers off": []}
    for i in range(2 * args.runs + 2):
        label, timer = ("timers on", StageTimer()) if i % 2 == 0 else ("timers off", NullTimer())
        start = time.perf_counter()
        pipe.generate(prompt, images=[image], max_new_tokens=args.tokens, ignore_eos=True, timer=timer)
        if i >= 2:  # the first pair warms up
            times[label].append(time.perf_counter() - start)
    on, off = np.array(times["timers on"]), np.array(times["timers off"])
    for label, t in times.items():
        print(f"{label:<11} median {np.median(t) * 1e3:8.3f} ms  IQR {np.subtract(*np.percentile(t, [75, 25])) * 1e3:.3f} ms")
    print(f"difference of medians {(np.median(on) - np.median(off)) * 1e3:+.3f} ms "
          f"({(np.median(on) / np.median(off) - 1) * 100:+.2f} %), noise (IQR of 'off') "
          f"{np.subtract(*np.percentile(off, [75, 25])) * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
