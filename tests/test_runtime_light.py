"""The runtime must import without torch, transformers or onnx (embedded targets don't have them)."""

import subprocess
import sys

import pytest


def test_runtime_imports_no_heavy_frameworks():
    code = (
        "import sys, vlmforge.runtime, vlmforge.kernels; "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'onnx'}); "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"runtime imported {out.stdout.strip()}"


def test_fast_and_public_bindings_decode_alike(tiny_llava, rng):
    """The C-level binding (what every step uses) and the public IOBinding fallback give the same
    logits and cache over a prefill and several steps; logits stay valid through the next step."""
    import numpy as np

    from vlmforge.runtime import Pipeline
    from vlmforge.runtime.kv_cache import OrtDecoder
    from vlmforge.runtime.ort_binding import FastBinding, PublicBinding
    from vlmforge.runtime.session import OrtSession

    _, out = tiny_llava
    pipe = Pipeline.load(out)
    fast, spec = pipe.decoder, pipe.manifest.graphs["llm"]
    assert isinstance(fast._binding, FastBinding)
    public = OrtDecoder(OrtSession(out / spec.path, spec), pipe.manifest.llm)
    public._binding = PublicBinding(public.session)
    hidden = pipe.manifest.llm.hidden_size
    embeds = rng.standard_normal((1, 9, hidden)).astype(np.float32)
    fast.reset(), public.reset()
    a, b = fast.step(embeds, np.arange(9)[None]), public.step(embeds, np.arange(9)[None])
    np.testing.assert_array_equal(a, b)
    for t in range(9, 14):
        x = rng.standard_normal((1, 1, hidden)).astype(np.float32)
        kept, before = a, a.copy()
        a, b = fast.step(x, np.array([[t]])), public.step(x, np.array([[t]]))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(kept, before)  # the previous step's logits survive this step
    assert fast.cache.num_tokens == public.cache.num_tokens == 14
    for x, y in zip(fast.cache.values, public.cache.values):
        np.testing.assert_array_equal(x.numpy(), y.numpy())


def test_onnxruntime_threads_follow_vlmforge_threads(monkeypatch):
    from vlmforge.runtime.session import physical_cores

    monkeypatch.setenv("VLMFORGE_THREADS", "3")
    assert physical_cores() == 3
    monkeypatch.setenv("VLMFORGE_THREADS", "0")
    with pytest.raises(ValueError, match="VLMFORGE_THREADS"):
        physical_cores()


def test_the_runtime_never_names_a_family():
    """What differs between families at run time is a manifest declaration: no runtime module holds a
    family's folder name or model_type as a string (a branch like ``if family == "cogvlm"``)."""
    import ast
    import pathlib

    import vlmforge.runtime as runtime
    from vlmforge.export.families import FAMILIES

    names = set(FAMILIES) | {t for types in FAMILIES.values() for t in types}
    found = []
    for path in sorted(pathlib.Path(runtime.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in names:
                found.append(f"{path.name}:{node.lineno} {node.value!r}")
    assert not found, found
