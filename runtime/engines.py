"""The manifest's optional ``engines`` section (TensorRT plans built on the target device) and
the check that refuses stale ones.

A TensorRT engine is compiled for one TensorRT version and one GPU compute capability; loading
it anywhere else either fails deep inside TensorRT or silently runs slow kernels. The build
therefore records a fingerprint and the runtime compares it with the machine it runs on before
anything is deserialised (``check_fingerprint``, pure so it is tested without a GPU).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..kernels.spec import from_dict
from .errors import ManifestError


class StaleEngineError(ManifestError):
    """The engines in the folder were built for another TensorRT version or GPU."""


@dataclass
class BuildFingerprint:
    tensorrt_version: str  # trt.__version__ of the builder, e.g. "10.3.0.30"
    gpu_name: str  # e.g. "Orin", "NVIDIA H100 80GB HBM3"
    compute_capability: str  # "major.minor", e.g. "8.7" (Orin), "9.0" (H100)
    build_seconds: float = 0.0  # all engines together


@dataclass
class EngineSpec:
    """One serialised engine: ``<graph>.engine`` next to its ONNX graph."""

    path: str
    sha256: str
    bytes: int
    precision: str  # what was built: fp32, fp16, int8, int8-weight, int4-weight
    # one entry per optimisation profile, in profile-index order:
    # {input name: {"min": [...], "opt": [...], "max": [...]}}
    profiles: list[dict]
    strongly_typed: bool = False
    dla_core: int | None = None  # None: GPU only
    build_seconds: float = 0.0


@dataclass
class EnginesSpec:
    fingerprint: BuildFingerprint
    graphs: dict[str, EngineSpec]
    max_context: int  # the LLM engine holds at most this many tokens (may be < llm.max_context)
    max_tiles: int  # the vision engine takes at most this many tiles per call

    def __post_init__(self):
        if isinstance(self.fingerprint, dict):
            self.fingerprint = _as(BuildFingerprint, self.fingerprint)
        self.graphs = {k: v if isinstance(v, EngineSpec) else _as(EngineSpec, v) for k, v in self.graphs.items()}


def _as(cls, value: dict):
    try:
        return from_dict(cls, value)
    except TypeError as e:  # a missing required key
        raise ManifestError(f"invalid {cls.__name__} in the manifest's engines section: {e}; rebuild the engines") from None


def check_fingerprint(recorded: BuildFingerprint, current: BuildFingerprint, model_dir: str = "MODEL") -> list[str]:
    """Raise ``StaleEngineError`` when the engines cannot run here; return warnings that don't stop a run.

    TensorRT plans are not portable across TensorRT versions (the full version: a plan from
    10.3.0 is refused by 10.3.1) nor across compute capabilities. Another GPU model with the
    same compute capability loads, but TensorRT tuned its kernels for the builder's GPU.
    """
    rebuild = f"rebuild them on this machine: vlmforge build {model_dir} --backend tensorrt"
    problems = []
    if recorded.tensorrt_version != current.tensorrt_version:
        problems.append(f"TensorRT {recorded.tensorrt_version} (this machine has {current.tensorrt_version})")
    if recorded.compute_capability != current.compute_capability:
        problems.append(
            f"compute capability {recorded.compute_capability} ({recorded.gpu_name}); this GPU is "
            f"{current.gpu_name} with compute capability {current.compute_capability}"
        )
    if problems:
        raise StaleEngineError(f"the TensorRT engines in {model_dir} were built for {' and '.join(problems)}; {rebuild}")
    if recorded.gpu_name != current.gpu_name:
        return [f"the engines were tuned on {recorded.gpu_name}, not on this {current.gpu_name}; for best speed {rebuild}"]
    return []
