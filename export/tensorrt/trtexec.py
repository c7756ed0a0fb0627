"""The same engine builds as ``trtexec`` command lines, for building on the device itself
(Jetson images ship ``/usr/src/tensorrt/bin/trtexec`` but not always a Python toolchain).

Pure host logic. Syntax (TensorRT 10 trtexec): shapes are ``name:AxBxC`` joined by commas, one
``--minShapes/--optShapes/--maxShapes`` triplet per optimisation profile, in profile order;
``--memPoolSize=workspace:<N>M`` (base-2 suffix; ``--workspace`` is gone since TensorRT 10);
``--stronglyTyped`` where the graph carries its own precision; ``--skipInference`` builds only.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .options import BuildOptions, GraphPlan
from .profiles import Profile

FLAG_ARGS = {"FP16": "--fp16", "INT8": "--int8"}  # GPU_FALLBACK → --allowGPUFallback, with --useDLACore


def shape_spec(profile: Profile, which: int) -> str:
    """``which``: 0 min, 1 opt, 2 max → ``"a:1x3x30x30,b:1x2x0x16"``."""
    return ",".join(f"{name}:{'x'.join(str(d) for d in shapes[which])}" for name, shapes in profile.items())


def trtexec_args(graph: str, onnx: str, plan: GraphPlan, profiles: list[Profile], options: BuildOptions) -> list[str]:
    """The argument list (without the program) that builds ``<graph>.engine`` from ``onnx``."""
    args = [f"--onnx={onnx}", f"--saveEngine={graph}.engine"]
    for profile in profiles:
        args += [f"--{k}Shapes={shape_spec(profile, i)}" for i, k in enumerate(("min", "opt", "max"))]
    if plan.strongly_typed:
        args.append("--stronglyTyped")
    args += [FLAG_ARGS[f] for f in plan.flags if f in FLAG_ARGS]
    args.append(f"--memPoolSize=workspace:{int(round(options.workspace_gb * 1024))}M")
    if options.timing_cache:
        args.append(f"--timingCacheFile={options.timing_cache}")
    if graph in options.dla_graphs:
        args += [f"--useDLACore={options.dla_core}", "--allowGPUFallback"]
    args.append("--skipInference")
    return args


def command_line(args: list[str], program: str = '"$TRTEXEC"') -> str:
    """One shell line, each argument quoted only where the shell needs it."""
    return " ".join([program, *(shlex.quote(a) for a in args)])


def build_script(commands: dict[str, list[str]], model_name: str) -> str:
    """A bash script running every graph's trtexec build inside the model folder."""
    lines = [
        "#!/usr/bin/env bash",
        f"# TensorRT engines for {model_name}, built on the device that will run them.",
        "# usage: bash build.sh [MODEL_DIR]   (MODEL_DIR defaults to this script's folder;",
        "#        TRTEXEC=/usr/src/tensorrt/bin/trtexec bash build.sh when trtexec is not on PATH)",
        "# then record them in the manifest: vlmforge build MODEL_DIR --backend tensorrt --adopt",
        "set -euo pipefail",
        'TRTEXEC="${TRTEXEC:-trtexec}"',
        'cd "${1:-$(dirname "$0")}"',
    ]
    for graph, args in commands.items():
        lines += [f"echo 'building {graph}.engine'", command_line(args)]
    return "\n".join(lines) + "\n"


def write_build_script(path: str | Path, commands: dict[str, list[str]], model_name: str) -> Path:
    path = Path(path)
    path.write_text(build_script(commands, model_name))
    path.chmod(0o755)
    return path
