"""ONNX graph → serialised TensorRT engine with the TensorRT 10 Python API. Thin on purpose:
every decision (precision, flags, profiles) was made by ``options.py`` / ``profiles.py``.

Follows NVIDIA's samples (samples/python/*/build_engine.py): Builder → network (STRONGLY_TYPED
where the graph carries its precision; explicit batch is the only mode since TensorRT 10) →
OnnxParser.parse_from_file, every parser error reported → BuilderConfig (memory pool limit,
precision flags, one optimisation profile per entry, timing cache, DLA) →
build_serialized_network.
"""

from __future__ import annotations

import time
from pathlib import Path

from ...runtime.errors import VlmforgeError
from ...runtime.tensorrt_session import require_tensorrt
from .options import BuildOptions, GraphPlan
from .profiles import Profile


def _logger():
    trt = require_tensorrt()
    return trt.Logger(trt.Logger.WARNING)


class TimingCache:
    """One timing cache shared by every graph's build, loaded from and saved to ``path``.

    Saving combines with what is on disk at that moment, so concurrent builds sharing the file
    keep each other's entries (TensorRT skips conflicting ones).
    """

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.cache = None

    def attach(self, config) -> None:
        if self.cache is None:
            blob = self.path.read_bytes() if self.path and self.path.is_file() else b""
            self.cache = config.create_timing_cache(blob)
        if not config.set_timing_cache(self.cache, ignore_mismatch=False):
            raise VlmforgeError(f"the timing cache {self.path} was written by another TensorRT version or GPU; delete it or pass another --timing-cache")

    def save(self, config) -> None:
        if self.path is None or self.cache is None:
            return
        if self.path.is_file():
            on_disk = config.create_timing_cache(self.path.read_bytes())
            self.cache.combine(on_disk, ignore_mismatch=False)
        self.path.write_bytes(bytes(self.cache.serialize()))


def parse_network(builder, logger, onnx_path: Path, strongly_typed: bool):
    trt = require_tensorrt()
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if strongly_typed else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = "\n".join(f"  {parser.get_error(i)}" for i in range(parser.num_errors))
        raise VlmforgeError(f"TensorRT's ONNX parser rejected {onnx_path.name}:\n{errors}\n"
                            "the graph uses an operator or type this TensorRT version cannot build; check the TensorRT version")
    return network, parser  # the parser owns the weights the network points to: keep it alive


def make_config(builder, plan: GraphPlan, profiles: list[Profile], options: BuildOptions, on_dla: bool):
    trt = require_tensorrt()
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(options.workspace_gb * (1 << 30)))
    for flag in plan.flags:
        if not hasattr(trt.BuilderFlag, flag):  # TensorRT 11 removed the weak-typing precision flags
            raise VlmforgeError(f"TensorRT {trt.__version__} has no BuilderFlag.{flag}: convert the graph to its precision "
                                "first (vlmforge.calibration) so it builds strongly typed")
        config.set_flag(getattr(trt.BuilderFlag, flag))
    for profile in profiles:
        p = builder.create_optimization_profile()
        for name, (lo, opt, hi) in profile.items():
            p.set_shape(name, lo, opt, hi)
        config.add_optimization_profile(p)
    if on_dla:
        if builder.num_DLA_cores <= options.dla_core:
            raise VlmforgeError(f"--dla-core {options.dla_core} does not exist: this device has {builder.num_DLA_cores} DLA core(s)")
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = options.dla_core
    return config


def build_engine(onnx_path: Path, engine_path: Path, plan: GraphPlan, profiles: list[Profile],
                 options: BuildOptions, on_dla: bool, timing: TimingCache) -> float:
    """Write ``engine_path``; returns the build time in seconds."""
    trt = require_tensorrt()
    start = time.perf_counter()
    logger = _logger()
    builder = trt.Builder(logger)
    network, parser = parse_network(builder, logger, onnx_path, plan.strongly_typed)
    config = make_config(builder, plan, profiles, options, on_dla)
    timing.attach(config)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise VlmforgeError(f"TensorRT could not build {engine_path.name} (its log above says why); "
                            "try a larger --workspace-gb, a smaller --max-context, or another --precision")
    engine_path.write_bytes(bytes(serialized))
    timing.save(config)
    del parser
    return time.perf_counter() - start
