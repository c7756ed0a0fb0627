"""Repeat a generation and summarise each stage over the runs (median, p90, p95, p99, min, max).

Stage times come from ``GenerationStats``: the same timers ``generate`` always runs, so
profiling adds no instrumentation of its own. Per-call stages (each decode step) are pooled.
"""

from __future__ import annotations

import json
import os
import platform
from dataclasses import dataclass, field

import numpy as np

from .stats import STAGES, GenerationStats
from .vision_cache import VisionCache

PERCENTILES = {"median_s": 50, "p90_s": 90, "p95_s": 95, "p99_s": 99}


def summarise(values: list[float]) -> dict:
    arr = np.asarray(values, dtype=np.float64)
    out = {k: float(np.percentile(arr, q)) for k, q in PERCENTILES.items()}
    out.update(min_s=float(arr.min()), max_s=float(arr.max()), calls=int(arr.size))
    return out


@dataclass
class ProfileReport:
    runs: list[GenerationStats]
    environment: dict = field(default_factory=dict)
    memory: dict = field(default_factory=dict)
    load_s: float | None = None  # Pipeline.load: manifest, hash checks, sessions

    def per_run_stage_totals(self) -> dict[str, list[float]]:
        stages = [s for s in STAGES if any(s in r.stages for r in self.runs)]
        return {s: [r.stage_total(s) for r in self.runs] for s in stages}

    def gpu_stage_totals(self) -> dict[str, list[float]]:
        """Per-run CUDA-event totals of the stages a GPU engine timed (empty on CPU backends)."""
        stages = [s for s in STAGES if all(s in r.gpu_stages for r in self.runs)]
        return {s: [float(sum(r.gpu_stages[s])) for r in self.runs] for s in stages}

    def as_dict(self) -> dict:
        stages = {name: summarise(v) for name, v in self.per_run_stage_totals().items()}
        steps = [t for r in self.runs for t in r.stages.get("decode", [])]
        gpu_steps = [t for r in self.runs for t in r.gpu_stages.get("decode", [])]
        last = self.runs[-1]
        return {
            "schema": "vlmforge-profile/1",
            "runs": len(self.runs),
            "stages": stages,  # per run totals of each stage
            "decode_step": summarise(steps) if steps else None,  # each decode step, pooled over runs
            # GPU backends: the same stages timed on the GPU with CUDA events (engine work only)
            "gpu_stages": {name: summarise(v) for name, v in self.gpu_stage_totals().items()},
            "gpu_decode_step": summarise(gpu_steps) if gpu_steps else None,
            "load_s": self.load_s,
            "ttft_s": float(np.median([r.ttft_s for r in self.runs])),
            "end_to_end": summarise([r.total_s for r in self.runs]),
            "decode_tokens_per_s": float(np.median([r.decode_tokens_per_s for r in self.runs])),
            "prefill_tokens_per_s": float(np.median([r.prefill_tokens_per_s for r in self.runs])),
            "num_prompt_tokens": last.num_prompt_tokens,
            "num_image_tokens": last.num_image_tokens,
            "num_generated_tokens": last.num_generated_tokens,
            "kv_cache_bytes": last.kv_cache_bytes,
            "memory": self.memory,
            "environment": self.environment,
        }

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), indent=2)

    def table(self) -> str:
        d = self.as_dict()
        gpu = dict(d["gpu_stages"])  # a GPU-time column only where a stage was timed with CUDA events
        if d["gpu_decode_step"]:
            gpu["decode/step"] = d["gpu_decode_step"]
        lines = [f"{'stage':<14}{'median ms':>11}{'p90 ms':>10}{'p95 ms':>10}{'max ms':>10}{'calls':>7}"
                 + (f"{'gpu ms':>10}" if gpu else "")]
        rows = dict(d["stages"])
        if d["decode_step"]:
            rows["decode/step"] = d["decode_step"]
        for name, s in rows.items():
            lines.append(
                f"{name:<14}{s['median_s'] * 1e3:>11.3f}{s['p90_s'] * 1e3:>10.3f}"
                f"{s['p95_s'] * 1e3:>10.3f}{s['max_s'] * 1e3:>10.3f}{s['calls']:>7}"
                + (f"{gpu[name]['median_s'] * 1e3:>10.3f}" if name in gpu else "")
            )
        e2e = d["end_to_end"]
        if d["load_s"] is not None:
            lines.append(f"load                  {d['load_s'] * 1e3:.2f} ms (Pipeline.load)")
        lines += [
            f"time to first token   {d['ttft_s'] * 1e3:.2f} ms",
            f"end to end (median)   {e2e['median_s'] * 1e3:.2f} ms",
            f"prefill               {d['prefill_tokens_per_s']:.1f} tokens/s ({d['num_prompt_tokens']} tokens, "
            f"{d['num_image_tokens']} from images)",
            f"decode                {d['decode_tokens_per_s']:.1f} tokens/s ({d['num_generated_tokens']} generated)",
            f"KV cache              {d['kv_cache_bytes'] / 1024:.1f} KiB",
            f"peak RSS              {self.memory.get('peak_rss_bytes', 0) / 2**20:.1f} MiB "
            f"(artifacts {sum(self.memory.get('artifact_bytes', {}).values()) / 2**20:.1f} MiB)",
        ]
        if "gpu_used_bytes" in self.memory:
            lines.append(f"GPU memory used       {self.memory['gpu_used_bytes'] / 2**20:.1f} MiB "
                         f"of {self.memory['gpu_total_bytes'] / 2**20:.0f} MiB")
        return "\n".join(lines)


def environment(pipe) -> dict:
    import onnxruntime

    from .. import __version__

    return {
        "vlmforge": __version__,
        "backend": getattr(pipe, "backend", "onnxruntime"),
        "preprocess": getattr(getattr(pipe, "preprocess", None), "device", "cpu"),  # "cuda": the CUDA tiling kernel
        "preprocess_kernel": getattr(getattr(pipe, "preprocess", None), "kernel", "numpy"),  # "c", "numpy" or "cuda"
        "onnxruntime": onnxruntime.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "family": pipe.manifest.family,
        "precision": {name: g.precision for name, g in pipe.manifest.graphs.items()},
        "lm_head": pipe.manifest.llm.head,
    }


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (Linux reports ru_maxrss in KiB, macOS in bytes)."""
    import resource
    import sys

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)


GPU_BACKENDS = ("tensorrt", "onnxruntime-cuda", "onnxruntime-tensorrt")


def memory(pipe) -> dict:
    out = {
        "peak_rss_bytes": peak_rss_bytes(),
        "artifact_bytes": {name: a.bytes for name, a in pipe.manifest.artifacts.items()},
    }
    if getattr(pipe, "backend", None) in GPU_BACKENDS:  # after the runs: engines, KV cache, workspaces resident
        from .cuda import memory_used_bytes

        out.update(memory_used_bytes())
    return out


def profile(pipe, prompt: str, images: list, runs: int = 5, warmup: int = 1, max_new_tokens: int = 32,
            videos: list | None = None, video_fps: float = 2.0) -> ProfileReport:
    """Run ``warmup`` + ``runs`` greedy generations; EOS is ignored so every run decodes the same count."""
    if runs < 1 or warmup < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0 (got runs={runs}, warmup={warmup})")
    kwargs = dict(images=images, max_new_tokens=max_new_tokens, ignore_eos=True)
    if videos:
        kwargs.update(videos=videos, video_fps=video_fps)
    kept, pipe.vision_cache = pipe.vision_cache, VisionCache(0)  # every run measures the vision stages
    try:
        for _ in range(warmup):
            pipe.generate(prompt, **kwargs)
        stats = [pipe.generate(prompt, **kwargs).stats for _ in range(runs)]
    finally:
        pipe.vision_cache = kept
    return ProfileReport(stats, environment(pipe), memory(pipe), getattr(pipe, "load_s", None))
