"""The runtime must import without torch, transformers or onnx (embedded targets don't have them)."""

import subprocess
import sys


def test_runtime_imports_no_heavy_frameworks():
    code = (
        "import sys, vlmforge.runtime, vlmforge.kernels; "
        "heavy = sorted({m.split('.')[0] for m in sys.modules} & {'torch', 'transformers', 'onnx'}); "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"runtime imported {out.stdout.strip()}"
