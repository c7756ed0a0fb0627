"""What the many-callers lock (runtime/turns.py) costs on the decode path: median decode tokens/s
of 7 generations with it, without it (a pass-through), and with it again.

    python benchmarks/bench_turns.py EXPORT_DIR [--tokens 128]
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np

import vlmforge.runtime.turns as turns
from vlmforge.runtime import Pipeline


def rate(pipe, prompt, image, tokens: int) -> float:
    runs = [pipe.generate(prompt, images=[image], max_new_tokens=tokens, ignore_eos=True).stats for _ in range(7)]
    return statistics.median(s.decode_tokens_per_s for s in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()
    pipe = Pipeline.load(args.model)
    image = np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)
    prompt = pipe.turn_prompt("What is in the picture?", 1)
    locked = turns.DecoderTurns.run
    first = rate(pipe, prompt, image, args.tokens)
    turns.DecoderTurns.run = lambda self, steps: (yield from steps)
    bare = rate(pipe, prompt, image, args.tokens)
    turns.DecoderTurns.run = locked
    again = rate(pipe, prompt, image, args.tokens)
    print(f"decode tokens/s: with turns {first:.0f} and {again:.0f}, without {bare:.0f}")


if __name__ == "__main__":
    main()
