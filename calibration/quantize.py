"""``quantize_model``: an fp32 export → a complete exported folder with each graph at the
precision asked for. Unchanged artifacts are copied; the manifest records every graph's
precision, how it was quantised and its I/O dtypes, and all hashes are recomputed. Written
into a temporary sibling folder and renamed into place, like ``export_model``.
"""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import numpy as np

from ..export.atomic import check_output, write_atomically
from ..runtime.manifest import MANIFEST_NAME, Manifest, TensorSpec, load_manifest
from . import onnx_io
from .cache import CalibrationCache, default_cache_path, load_cache
from .fp16 import convert_fp16
from .int8 import DEFAULT_MIN_SQNR_DB, quantize_int8
from .dynamic_int8 import quantize_dynamic_int8
from .kv_int8 import SCALE_SUFFIX, quantize_kv_cache
from .precision import DYNAMIC_INT8, WEIGHT_ONLY_BITS, QuantizationError, check_target, parse_precision
from .weight_only import check_weight_only, quantize_weight_only

NEEDS_CALIBRATION = ("int8", "fp16")  # ranges (int8) / measured maxima (fp16's FP32 islands)


def quantize_model(
    model_dir: str | Path,
    out_dir: str | Path,
    precision: str | dict[str, str],
    *,
    calibration: str | Path | None = None,
    target: str = "onnxruntime",
    block_size: int | None = None,
    accuracy_level: int | None = 4,
    min_sqnr_db: float = DEFAULT_MIN_SQNR_DB,
    embeddings: str = "float16",
    kv_cache: str = "float",
    overwrite: bool = False,
) -> Manifest:
    """Quantise the fp32 export in ``model_dir`` into ``out_dir``; returns the manifest written.

    ``block_size``: weight-only block along K; None: 128 (see ``weight_only.DEFAULT_BLOCK_SIZES``).
    ``embeddings``: storage of the token embedding table the runtime gathers rows from (float16
    halves it — 545 MB → 272 MB for a 151936×896 vocabulary — at ~5e-4 relative rounding).
    ``kv_cache``: "float" (the graph's float type) or "int8" (calibration/kv_int8.py: int8 keys/values
    with a scale per token and head, ONNX Runtime and the append layout only)."""
    root, out = Path(model_dir), Path(out_dir)
    manifest = load_manifest(root)
    _refuse_quantised(manifest, root)
    plan = parse_precision(precision, list(manifest.graphs)) if isinstance(precision, str) else dict(precision)
    check_target(target)
    if embeddings not in ("float16", "float32"):
        raise QuantizationError(f"--embeddings {embeddings!r} is not supported; choose float16 or float32")
    check_output([root], out, overwrite)
    cache = _cache_if_needed(plan, root, calibration)
    _check_plan(root, manifest, plan, target, block_size)
    _check_kv_cache(manifest, kv_cache, target)
    options = dict(target=target, block_size=block_size, accuracy_level=accuracy_level, min_sqnr_db=min_sqnr_db)
    return write_atomically(out, lambda tmp: _quantize_into(root, tmp, manifest, plan, cache, options, embeddings,
                                                            kv_cache))


def _refuse_quantised(manifest: Manifest, root: Path) -> None:
    if manifest.llm.head != "full":
        raise QuantizationError(f"{root} has a {manifest.llm.head} LM head; quantise an export made with --lm-head full "
                                "(w8 / w4 quantise the head with the rest of the LLM)")
    done = {g: s.precision for g, s in manifest.graphs.items() if s.precision != "fp32" or s.quantization}
    if manifest.embeddings.dtype != "float32":
        done["embeddings"] = manifest.embeddings.dtype
    if done:
        raise QuantizationError(
            f"{root} is already quantised ({', '.join(f'{g}={p}' for g, p in done.items())}); quantising twice compounds "
            "the error and loses track of the float reference — quantise the fp32 export it came from"
        )


def _cache_if_needed(plan: dict[str, str], root: Path, calibration) -> CalibrationCache | None:
    if not any(p in NEEDS_CALIBRATION for p in plan.values()):
        return None
    return load_cache(Path(calibration) if calibration else default_cache_path(root))


def _check_plan(root: Path, manifest: Manifest, plan: dict[str, str], target: str, block_size: int | None) -> None:
    """Every refusal happens here, before anything is written."""
    import onnx

    unknown = set(plan) - set(manifest.graphs)
    if unknown:
        raise QuantizationError(f"the model has no graph(s) {sorted(unknown)}; its graphs: {', '.join(manifest.graphs)}")
    for name, precision in plan.items():
        if precision == DYNAMIC_INT8 and target != "onnxruntime":
            raise QuantizationError(
                f"w8a8 (int8-dynamic) quantises activations at run time with MatMulInteger, which TensorRT cannot "
                f"build; for TensorRT quantise the {name} graph with int8 (calibrated Q/DQ) or w8, or use --target onnxruntime"
            )
        if precision in WEIGHT_ONLY_BITS or precision == DYNAMIC_INT8:
            structure = onnx.load(str(root / manifest.graphs[name].path), load_external_data=False)
            check_weight_only(name, structure, WEIGHT_ONLY_BITS.get(precision, 8), block_size, target)


def _check_kv_cache(manifest: Manifest, kv_cache: str, target: str) -> None:
    if kv_cache not in ("float", "int8"):
        raise QuantizationError(f"--kv-cache {kv_cache!r} is not supported; choose float or int8")
    if kv_cache == "float":
        return
    if target != "onnxruntime":
        raise QuantizationError("--kv-cache int8 runs on ONNX Runtime only (the TensorRT decoder keeps a float cache); "
                                "drop --kv-cache or use --target onnxruntime")
    if "llm" not in manifest.graphs or manifest.llm.cache_layout != "append":
        raise QuantizationError(f"--kv-cache int8 needs an llm graph with the append KV layout (this export's is "
                                f"{manifest.llm.cache_layout!r}); re-export with --kv-layout append")


def _quantize_into(root, tmp, manifest, plan, cache, options: dict, embeddings: str, kv_cache: str) -> Manifest:
    from ..export.api import hash_artifacts

    new = copy.deepcopy(manifest)
    new.engines = None  # engines were built from the float graphs: rebuild them (vlmforge build)
    replaced = set()
    for name, spec in manifest.graphs.items():
        src = root / spec.path
        precision = plan.get(name, "fp32")
        kv8 = name == "llm" and kv_cache == "int8"
        if precision == "fp32" and not kv8:
            continue
        sha = manifest.artifacts[spec.path].sha256
        record = _convert(name, src, tmp / spec.path, precision, cache, sha, **options) if precision != "fp32" else {}
        if kv8:  # on the converted graph (or the float one): its cache inputs/outputs become int8 + scales
            record["kv_cache"] = quantize_kv_cache(tmp / spec.path if precision != "fp32" else src, tmp / spec.path)
            _declare_scales(new, name)
        record["source_sha256"] = sha
        replaced |= {spec.path, *onnx_io.external_files(src)}
        _describe(new, name, precision, record, tmp / spec.path)
    if embeddings != manifest.embeddings.dtype:  # (vocab, hidden) rows, gathered and cast to float32 at run time
        table = np.load(root / manifest.embeddings.name, mmap_mode="r")
        np.save(tmp / manifest.embeddings.name, table.astype(embeddings))
        new.embeddings.dtype = embeddings
        replaced.add(manifest.embeddings.name)
    for rel in manifest.artifacts:
        if rel not in replaced:
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / rel, tmp / rel)
    new.artifacts = hash_artifacts(tmp)
    (tmp / MANIFEST_NAME).write_text(new.to_json())
    return new


def _convert(name, src, dst, precision, cache, sha, target, block_size, accuracy_level, min_sqnr_db) -> dict:
    if precision == "fp16":
        return convert_fp16(src, dst, cache.for_graph(name, sha).absmax)
    if precision == "int8":
        return quantize_int8(src, dst, cache.for_graph(name, sha), cache.method, min_sqnr_db)
    if precision == DYNAMIC_INT8:
        return quantize_dynamic_int8(src, dst)
    return quantize_weight_only(src, dst, WEIGHT_ONLY_BITS[precision], block_size, target, accuracy_level)


def _describe(manifest: Manifest, name: str, precision: str, record: dict, path: Path) -> None:
    """Precision, quantisation record and the I/O dtypes the new graph really has."""
    import onnx

    spec = manifest.graphs[name]
    spec.precision = precision
    spec.quantization = record
    model = onnx.load(str(path), load_external_data=False)
    dtypes = {v.name: np.dtype(onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)).name
              for v in (*model.graph.input, *model.graph.output)}
    for t in (*spec.inputs, *spec.outputs):
        t.dtype = dtypes[t.name]
    if name == "llm" and record.get("kv_dtype"):
        manifest.llm.kv_dtype = record["kv_dtype"]
    if name == "llm" and record.get("kv_cache"):
        manifest.llm.kv_dtype = "int8"


def _declare_scales(manifest: Manifest, name: str) -> None:
    """The int8 cache's ``…_scale`` I/O: (b, kv_heads, tokens, 1) float32 beside each cache tensor."""
    spec = manifest.graphs[name]
    for tensors, prefix in ((spec.inputs, "past_key_values."), (spec.outputs, "new.")):
        tensors += [TensorSpec(f"{t.name}{SCALE_SUFFIX}", "float32", [*t.shape[:-1], 1])
                    for t in list(tensors) if t.name.startswith(prefix)]
