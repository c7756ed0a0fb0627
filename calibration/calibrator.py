"""``calibrate``: run real image + prompt pairs through the float model and cache what each
graph saw (ranges, absolute maxima, INT8 noise per GEMM input) for ``quantize``."""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from ..runtime.manifest import MANIFEST_NAME, load_manifest
from .cache import CACHE_NAME, METHODS, CalibrationCache, GraphCalibration, default_cache_path
from .cache import FORMAT as CACHE_FORMAT
from .measure import GEMM_OPS, activation_sqnr, tensor_ranges
from .precision import QuantizationError
from .samples import SampleSet, load_samples
from .stages import encode_sample, llm_feeds, require_decoder_only

log = logging.getLogger("vlmforge.calibration")


@dataclass
class CalibrationResult:
    cache: CalibrationCache
    path: Path
    seconds: float

    def summary(self) -> str:
        c = self.cache
        lines = [f"calibrated {len(c.samples)} image+prompt pair(s) with {c.method} "
                 f"({len(c.skipped_images)} image(s) skipped as unreadable) in {self.seconds:.1f} s → {self.path}"]
        for name, g in c.graphs.items():
            worst = min(g.sqnr_db.items(), key=lambda kv: kv[1], default=("-", float("nan")))
            lines.append(f"  {name:9s} {g.num_feeds:3d} feeds, {len(g.ranges):4d} ranges, "
                         f"max |x| {max(g.absmax.values(), default=0):.3g}, lowest INT8 SQNR {worst[1]:.1f} dB ({worst[0]})")
        return "\n".join(lines)


def collect_feeds(model_dir: Path, samples: SampleSet, decode_steps: int) -> dict[str, list[dict]]:
    """Every graph's feeds from the real pipeline: tiles → vision, its features → connector,
    merged prompts → LLM prefill and ``decode_steps`` decode steps with the real KV cache."""
    from ..runtime import Pipeline

    pipe = Pipeline.load(model_dir, backend="onnxruntime")
    feeds: dict[str, list[dict]] = {"llm": []}
    for sample in samples.samples:
        enc = encode_sample(pipe, sample)
        for name, graph_feeds in enc.feeds.items():
            feeds.setdefault(name, []).append(graph_feeds)
        feeds["llm"].extend(llm_feeds(pipe, enc.inputs_embeds, decode_steps))
    return feeds


def calibrate(
    model_dir: str | Path,
    images: str | Path | None,
    prompts: str | Path | None = None,
    *,
    method: str = "minmax",
    num_samples: int | None = None,
    cache_path: str | Path | None = None,
    decode_steps: int = 2,
) -> CalibrationResult:
    """Measure ``model_dir`` (an fp32 export) on image + prompt pairs; write and return the cache."""
    start = time.perf_counter()
    root = Path(model_dir)
    if method not in METHODS:
        raise QuantizationError(f"unknown calibration method {method!r}; choose one of {', '.join(METHODS)}")
    manifest = load_manifest(root)
    quantised = {g: s.precision for g, s in manifest.graphs.items() if s.precision != "fp32"}
    if quantised:
        raise QuantizationError(f"{root} is already quantised ({quantised}); calibrate the fp32 export it came from")
    require_decoder_only(manifest, "calibration")
    path = Path(cache_path) if cache_path else default_cache_path(root)
    _check_cache_path(path, root, manifest, images, prompts)
    samples = load_samples(images, prompts, num_samples)
    feeds = collect_feeds(root, samples, decode_steps)
    graphs = {}
    for name, spec in manifest.graphs.items():
        if not feeds.get(name):  # a graph the pipeline did not run for these samples: nothing measured
            continue
        graphs[name] = _measure_graph(root / spec.path, feeds[name], method, manifest.artifacts[spec.path].sha256)
        log.info("calibrated %s graph on %d feeds", name, len(feeds[name]))
    cache = CalibrationCache(
        method=method, graphs=graphs, samples=[f"{s.name} | {s.prompt}" for s in samples.samples],
        skipped_images=samples.skipped, decode_steps=decode_steps, source=samples.source,
    )
    cache.save(path)
    return CalibrationResult(cache, path, time.perf_counter() - start)


def _check_cache_path(path: Path, root: Path, manifest, images, prompts) -> None:
    """The cache replaces only an earlier cache: never a file of the export, an input or any other file."""
    target = path.resolve()
    protected = {(root / name).resolve(): "a file of the export" for name in [*manifest.artifacts, MANIFEST_NAME]}
    if prompts:
        protected[Path(prompts).resolve()] = "the prompts file"
    if target in protected:
        raise QuantizationError(f"--cache {path} is {protected[target]}; write the calibration cache to a new file")
    if target.is_dir():
        raise QuantizationError(f"--cache {path} is a folder; give a file name (e.g. {path / CACHE_NAME})")
    if target.exists() and not _is_cache(target):
        raise QuantizationError(f"--cache {path} exists and is not a vlmforge calibration cache; "
                                "it would be overwritten — choose a new file name")


def _is_cache(path: Path) -> bool:
    try:
        return json.loads(path.read_text()).get("format") == CACHE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _measure_graph(path: Path, feeds: list[dict], method: str, sha256: str) -> GraphCalibration:
    absmax_ranges = tensor_ranges(path, feeds, "minmax")  # every float tensor: FP16 overflow check
    if method == "minmax":
        ranges = absmax_ranges
    else:  # histograms only where INT8 needs them: GEMM inputs and outputs
        ranges = tensor_ranges(path, feeds, method, op_types=list(GEMM_OPS))
    return GraphCalibration(
        sha256=sha256,
        ranges=ranges,
        absmax={k: max(abs(lo), abs(hi)) for k, (lo, hi) in absmax_ranges.items()},
        sqnr_db=activation_sqnr(path, feeds, ranges),
        num_feeds=len(feeds),
    )
