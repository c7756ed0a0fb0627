"""The runtime-only install (issue #19 part 1): in an environment made by ``pip install .`` alone
(``make test`` builds it as .venv-runtime), the runtime CLI runs an export made by the full
environment, and the export-stack commands say what to install in one line.

A missing environment fails rather than skips: ``make test`` always builds it, and a run without
it would not test what a Jetson image gets."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(os.environ.get("VLMFORGE_RUNTIME_VENV", ROOT / ".venv-runtime"))
if not VENV.is_absolute():
    VENV = ROOT / VENV
EXPORT_STACK = ("torch", "transformers", "onnx", "onnxscript", "safetensors")
INSTALL_HINT = 'pip install torch==2.13.0 "vlmforge[export]"'


@pytest.fixture(scope="module")
def venv():
    if not (VENV / "bin" / "vlmforge").is_file():
        pytest.fail(f"no runtime-only environment at {VENV}; build it with `make runtime-env` (make test does)")
    return VENV


def cli(venv, *args, cwd=None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([str(venv / "bin" / "vlmforge"), *map(str, args)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=cwd)


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("runtime_only") / "x.png"
    Image.fromarray(np.random.default_rng(5).integers(0, 256, (40, 52, 3), dtype=np.uint8)).save(path)
    return path


def test_the_environment_has_only_the_runtime(venv):
    code = f"import importlib.util as u; print([m for m in {EXPORT_STACK!r} if u.find_spec(m)])"
    out = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, cwd="/")
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import vlmforge; print(vlmforge.__file__)"],
                           capture_output=True, text=True, cwd="/").stdout
    assert str(venv) in where, f"vlmforge is imported from {where}, not from the runtime environment"


def test_run_answers_as_the_full_environment_does(venv, tiny_llava, picture, tmp_path):
    from vlmforge.runtime import Pipeline

    export = tiny_llava[1]
    done = cli(venv, "run", export, "--image", picture, "--prompt", "What is it?", "--max-new-tokens", "6", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    pipe = Pipeline.load(export)
    expected = pipe.generate(pipe.turn_prompt("What is it?", 1), images=[picture], max_new_tokens=6)
    assert done.stdout.rstrip("\n") == expected.text
    assert f"[{len(expected.token_ids)} tokens" in done.stderr


def test_profile_eval_and_trtexec_script(venv, tiny_llava, picture, tmp_path):
    export = tiny_llava[1]
    report = tmp_path / "profile.json"
    done = cli(venv, "profile", export, "--image", picture, "--runs", "1", "--warmup", "0", "--max-new-tokens", "2",
               "--json", report)
    assert done.returncode == 0 and report.is_file(), done.stderr
    done = cli(venv, "eval", export, "--n", "2")
    assert done.returncode == 0 and "held-out questions" in done.stdout, done.stderr
    script = tmp_path / "build.sh"
    done = cli(venv, "build", export, "--emit-trtexec", script)
    assert done.returncode == 0 and "trtexec" in script.read_text(), done.stderr


@pytest.mark.parametrize("args", [
    ("export", "MODEL", "-o", "OUT"), ("demo",), ("calibrate", "EXPORT", "--images", "IMAGES"),
    ("quantize", "EXPORT", "-o", "OUT", "--precision", "w8"), ("bench", "EXPORT", "--model-dir", "MODEL"),
])
def test_export_stack_commands_say_what_to_install(venv, tiny_llava, tmp_path, args):
    names = {"MODEL": tiny_llava[0], "EXPORT": tiny_llava[1], "OUT": tmp_path / "out", "IMAGES": tmp_path}
    done = cli(venv, *[names.get(a, a) for a in args])
    err = done.stderr.strip()
    assert done.returncode == 2 and "\n" not in err and INSTALL_HINT in err, err
    assert not (tmp_path / "out").exists()
