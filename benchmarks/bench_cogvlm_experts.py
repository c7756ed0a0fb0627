"""What CogVLM's visual-expert routing costs in the LLM graph: the routed graph vlmforge exports
(NonZero → Gather → each expert on its own rows → ScatterND) against the two alternatives — a
mask-select (both experts on every token, ``where`` picks) and a plain decoder with the language
weights only (what a decode step of text tokens would cost without any vision expert).

Random weights at CogVLM-17B's layer shape (hidden 4096, MLP 11008, 32 heads, vocab 32000) by
default, fewer layers (every layer costs the same); ONNX Runtime on the CPU, the three graphs loaded
together and timed in turn.
Reported: the median ms of a decode step at ``--context`` cached tokens, and of a prefill of
``--prefill`` tokens of which ``--image-tokens`` take the vision expert (v1's 490 px picture: 1227).

    python benchmarks/bench_cogvlm_experts.py [--layers 1] [--hidden 4096] [--context 1300] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from vlmforge.export.families.cogvlm import decoder as cog
from vlmforge.export.families.cogvlm import llm_graph
from vlmforge.export.families.cogvlm.config import parse_config
from vlmforge.export.onnx_export import export_graph
from vlmforge.export.tiny_cogvlm import tiny_config


class BlendRoutes(cog.Routes):
    """Both experts on every row; ``where`` keeps the one the mask names."""

    def __init__(self, expert_mask):
        self.mask = expert_mask[..., None] > 0.5

    def apply(self, x, vision, language, out_features):
        return torch.where(self.mask, vision(x), language(x))


class LanguageRoutes(cog.Routes):
    """Every row through the language expert: a plain Llama decoder's cost."""

    def __init__(self, expert_mask):
        pass

    def apply(self, x, vision, language, out_features):
        return language(x)


def export_variant(c, routes, out: Path, name: str) -> Path:
    original = cog.Routes
    cog.Routes = routes
    try:
        torch.manual_seed(0)
        decoder = cog.CogDecoder(c).eval()
        for p in decoder.parameters():
            p.data.normal_(0.0, 0.02)
        graph = llm_graph(decoder, c)
        path = out / f"{name}.onnx"
        export_graph(graph, path)
        return path
    finally:
        cog.Routes = original


def feeds(c, past: int, seq: int, image_tokens: int) -> dict:
    rng = np.random.default_rng(0)
    mask = np.zeros((1, seq), np.float32)
    mask[0, 1 : 1 + image_tokens] = 1.0
    out = {"inputs_embeds": rng.standard_normal((1, seq, c.hidden_size), np.float32),
           "attention_mask": np.ones((1, past + seq), np.int64),
           "position_ids": np.arange(past, past + seq, dtype=np.int64)[None], "expert_mask": mask}
    for i in range(c.num_layers):
        for kind in ("key", "value"):
            out[f"past_key_values.{i}.{kind}"] = rng.standard_normal((1, c.num_kv_heads, past, c.head_dim), np.float32)
    return out


def alternating_ms(sessions: dict, inputs: dict, repeats: int) -> dict:
    """Median ms per graph, the graphs timed in turn within each round (drift hits all alike)."""
    for session in sessions.values():
        session.run(None, inputs)  # warm-up
    times = {name: [] for name in sessions}
    for _ in range(repeats):
        for name, session in sessions.items():
            start = time.perf_counter()
            session.run(None, inputs)
            times[name].append((time.perf_counter() - start) * 1000)
    return {name: statistics.median(t) for name, t in times.items()}


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--hidden", type=int, default=4096)
    parser.add_argument("--intermediate", type=int, default=11008)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--context", type=int, default=1300, help="cached tokens before each decode step")
    parser.add_argument("--prefill", type=int, default=1300)
    parser.add_argument("--image-tokens", type=int, default=1227)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    cfg = tiny_config(1, vocab_size=args.vocab, hidden=args.hidden, layers=args.layers, heads=args.heads,
                      max_positions=max(4096, args.context + 8))
    cfg["intermediate_size"] = args.intermediate
    c = parse_config(cfg)
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    variants = {"routed (vlmforge)": cog.Routes, "mask-select": BlendRoutes, "language only": LanguageRoutes}
    print(f"CogVLM decoder, {args.layers} layer(s) of hidden {args.hidden} / MLP {args.intermediate} / {args.heads} "
          f"heads, vocab {args.vocab}, {args.threads} threads")
    print(f"{'graph':<20} {'decode step ms':>15} {'prefill ms':>12}   (decode at {args.context} cached; prefill "
          f"{args.prefill} tokens, {args.image_tokens} image)")
    with tempfile.TemporaryDirectory() as tmp:
        sessions = {}
        for name, routes in variants.items():
            path = export_variant(c, routes, Path(tmp), name.split()[0].replace("-", "_"))
            sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        step = alternating_ms(sessions, feeds(c, args.context, 1, 0), args.repeats)
        fill = alternating_ms(sessions, feeds(c, 0, args.prefill, args.image_tokens), max(3, args.repeats // 5))
    for name in variants:
        print(f"{name:<20} {step[name]:>15.2f} {fill[name]:>12.1f}")

if __name__ == "__main__":
    main()
