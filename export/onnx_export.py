"""torch module → ONNX file with named, symbolic dims; and the I/O description the manifest stores."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..runtime.manifest import GraphSpec, TensorSpec

EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's limit is 2 GiB; leave room for the graph itself
OPSET = 18


@dataclass
class GraphExport:
    """Everything needed to export one graph.

    ``dims`` names the dynamic axes of each input, e.g. {"pixel_values": {0: "num_tiles"}};
    every named axis is exported dynamic and the name ends up in the ONNX file and manifest.
    """

    name: str
    module: torch.nn.Module
    example_inputs: tuple
    input_names: list[str]
    output_names: list[str]
    dims: dict[str, dict[int, str]] = field(default_factory=dict)
    cache_layout: str = ""  # the llm graph: "concat" or "append" (export/append_cache.py) — manifest.llm.cache_layout


def _dynamic_shapes(g: GraphExport):
    """torch.export's nested spec: one dict per positional input; varargs (the KV cache) as a tuple."""
    specs = [{axis: torch.export.Dim.DYNAMIC for axis in g.dims.get(n, {})} for n in g.input_names]
    num_positional = len(g.example_inputs) - 1 if _has_varargs(g) else len(g.example_inputs)
    head = specs[:num_positional]
    return (*head, tuple(specs[num_positional:])) if _has_varargs(g) else tuple(head)


def _has_varargs(g: GraphExport) -> bool:
    return isinstance(g.example_inputs[-1], tuple)


def _flat_inputs(g: GraphExport) -> list[torch.Tensor]:
    if _has_varargs(g):
        return [*g.example_inputs[:-1], *g.example_inputs[-1]]
    return list(g.example_inputs)


def export_graph(g: GraphExport, path: Path) -> GraphSpec:
    """Export ``g`` to ``path`` (external data beside it when large) and describe its I/O."""
    num_bytes = sum(p.numel() * p.element_size() for p in g.module.parameters())
    external = num_bytes > EXTERNAL_DATA_BYTES
    with torch.no_grad():
        program = torch.onnx.export(
            g.module,
            tuple(_flat_inputs(g)),  # varargs (the KV cache) are passed flat; dynamic_shapes nests them
            input_names=g.input_names,
            output_names=g.output_names,
            dynamic_shapes=_dynamic_shapes(g),
            opset_version=OPSET,
            dynamo=True,
            optimize=True,
            verbose=False,
        )
    program.save(str(path), external_data=external)
    _merge_matmuls(path, external)
    return _name_dims(g, path)


def _merge_matmuls(path: Path, external: bool) -> None:
    """One GEMM per shared activation (q/k/v, gate/up): see merge_matmuls.py."""
    from .merge_matmuls import merge_shared_input_matmuls

    _rewrite(path, external, merge_shared_input_matmuls)


def screen_graph(g: GraphExport, path: Path) -> None:
    """Replace the LM head of the exported decoder ``path`` by the screened head, then check on the
    example inputs that its argmax is the torch module's."""
    from .screened_head import screen_lm_head

    external = path.with_name(path.name + ".data").exists()
    if not _rewrite(path, external, screen_lm_head):
        raise ValueError(f"the {g.name} graph has no MatMul with a constant (hidden, vocab) weight producing 'logits', "
                         "so there is no head to screen; export with lm_head='full' (--lm-head full)")
    got, ref = _run_both(g, path)  # output 0 is the logits
    if not np.array_equal(got[0].argmax(-1), ref[0].argmax(-1)):
        raise RuntimeError(f"the screened head of the {g.name} graph picks a different token from the torch module; "
                           "this is a vlmforge bug — please report it with the model config (export with --lm-head full meanwhile)")


def _rewrite(path: Path, external: bool, fn) -> bool:
    """Load ``path`` with its weights, apply ``fn(model) -> changed`` and save it back if it changed."""
    import onnx

    model = onnx.load(str(path))  # with its external weights, if any
    if not fn(model):
        return False
    data = path.with_name(path.name + ".data")
    data.unlink(missing_ok=True)  # rewritten whole below (save appends to an existing file)
    if external:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name)
        data.chmod(0o644)  # onnx writes it 0600; the folder is meant to be copied to devices and read by others
    else:
        onnx.save(model, str(path))
    return True


def _name_dims(g: GraphExport, path: Path) -> GraphSpec:
    """Replace the exporter's symbols (s12, s53 …) by our axis names in the file and return its I/O."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    rename: dict[str, str] = {}
    for value in model.graph.input:
        for axis, dim in enumerate(value.type.tensor_type.shape.dim):
            wanted = g.dims.get(value.name, {}).get(axis)
            if wanted and dim.dim_param:
                rename.setdefault(dim.dim_param, wanted)
    pattern = re.compile(r"\b(" + "|".join(map(re.escape, rename)) + r")\b") if rename else None

    def fix(values):
        for value in values:
            for dim in value.type.tensor_type.shape.dim:
                if dim.dim_param and pattern:
                    dim.dim_param = pattern.sub(lambda m: rename[m.group(0)], dim.dim_param)

    fix(model.graph.input)
    fix(model.graph.output)
    fix(model.graph.value_info)
    onnx.save(model, str(path))
    return GraphSpec(
        path=path.name,
        inputs=[_tensor_spec(v) for v in model.graph.input],
        outputs=[_tensor_spec(v) for v in model.graph.output],
    )


def _tensor_spec(value) -> TensorSpec:
    import onnx

    t = value.type.tensor_type
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.elem_type)).name
    shape = [d.dim_param if d.dim_param else int(d.dim_value) for d in t.shape.dim]
    return TensorSpec(name=value.name, dtype=dtype, shape=shape)


def check_graph(g: GraphExport, path: Path, atol: float) -> float:
    """Run the exported graph with ONNX Runtime on the example inputs; return max |onnx − torch|."""
    got, ref = _run_both(g, path)
    # relative to the output's magnitude where that exceeds 1 (logits of large models run to ±30)
    err = max(
        float(np.abs(a - b).max() / max(1.0, float(np.abs(a).max()))) if a.size else 0.0
        for a, b in zip(got, ref)
    )
    if not err <= atol:
        raise RuntimeError(
            f"exported {g.name} graph differs from the torch module by {err:.3g} (> {atol}); "
            "this is a vlmforge bug — please report it with the model config"
        )
    return err


def _run_both(g: GraphExport, path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The graph's outputs from ONNX Runtime and the torch module's, on the example inputs."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    flat = _flat_inputs(g)
    got = sess.run(g.output_names, {n: t.detach().cpu().numpy() for n, t in zip(g.input_names, flat)})
    with torch.no_grad():
        ref = g.module(*flat)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    return got, [r.detach().numpy() for r in ref]
