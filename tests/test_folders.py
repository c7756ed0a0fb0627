"""No user file is ever lost (issue #19 parts 4 and 9): export, quantize and calibrate refuse to
write into, over or around their input; --overwrite replaces only an earlier export; SIGTERM and
SIGINT leave no temporary folder; a killed run's temporary folder is cleaned by the next run; and
checkpoints export can't or won't load fail in one line."""

from __future__ import annotations

import hashlib
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vlmforge.cli import main
from vlmforge.export.atomic import FolderError, remove_stale, write_atomically


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` → its SHA-256: equal snapshots mean nothing was touched."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def model_copy(tiny_llava, tmp_path):
    dst = tmp_path / "hf"
    shutil.copytree(tiny_llava[0], dst)
    return dst


def _export(model_dir, out, *extra):
    return main(["export", str(model_dir), "-o", str(out), "--no-check", *extra])


@pytest.mark.parametrize("where", ["same", "inside", "around"])
def test_export_never_writes_into_over_or_around_its_input(model_copy, capsys, where):
    out = {"same": model_copy, "inside": model_copy / "out", "around": model_copy.parent}[where]
    before = snapshot(model_copy.parent)
    assert _export(model_copy, out, "--overwrite") == 2
    err = capsys.readouterr().err
    assert {"same": "is the input folder", "inside": "inside the input", "around": "contains the input"}[where] in err
    assert snapshot(model_copy.parent) == before


def test_overwrite_replaces_only_an_export(model_copy, tiny_llava, tmp_path, capsys):
    mine = tmp_path / "photos"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    assert _export(model_copy, mine, "--overwrite") == 2
    assert "is not a vlmforge export" in capsys.readouterr().err
    assert (mine / "holiday.jpg").read_bytes() == b"precious"
    notes = tmp_path / "notes.txt"
    notes.write_text("mine")
    assert _export(model_copy, notes, "--overwrite") == 2 and notes.read_text() == "mine"
    earlier = tmp_path / "earlier"
    shutil.copytree(tiny_llava[1], earlier)
    (earlier / "stale.txt").write_text("from the old export")
    assert _export(model_copy, earlier, "--overwrite") == 0
    assert (earlier / "manifest.json").is_file() and not (earlier / "stale.txt").exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_killed_runs_temporary_folder_is_removed_next_time(model_copy, tmp_path):
    out = tmp_path / "out"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.tmp-{dead.pid}"
    stale.mkdir()
    (stale / "llm.onnx").write_bytes(b"half")
    live = tmp_path / f".out.tmp-{os.getppid()}"  # a live process's folder is never touched
    live.mkdir()
    assert _export(model_copy, out) == 0
    assert not stale.exists() and live.exists()
    assert (out / "manifest.json").is_file()


def test_an_export_moved_aside_by_a_killed_run_is_put_back(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    aside = tmp_path / f".out.old-{dead.pid}"
    aside.mkdir()
    (aside / "manifest.json").write_text("{}")
    assert remove_stale(tmp_path / "out") == []
    assert (tmp_path / "out" / "manifest.json").is_file() and not aside.exists()


def test_an_error_midway_leaves_nothing(tmp_path):
    out = tmp_path / "out"

    def fill(tmp):
        (tmp / "part.onnx").write_bytes(b"x")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        write_atomically(out, fill)
    assert list(tmp_path.iterdir()) == []
    assert remove_stale(out) == []


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_removes_the_temporary_folder(model_copy, tmp_path, sig):
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "vlmforge.cli", "export", str(model_copy), "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not any(p.name.startswith(".out.tmp-") for p in tmp_path.iterdir()):
        assert proc.poll() is None and time.monotonic() < deadline, "export ended before it could be interrupted"
        time.sleep(0.05)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # no out, no temporary folder


def test_quantize_and_calibrate_never_touch_their_input(tiny_llava, tmp_path, capsys):
    from vlmforge.calibration import calibrate

    export = tmp_path / "fp32"
    shutil.copytree(tiny_llava[1], export)
    before = snapshot(export)
    for out in (export, export / "q", tmp_path):
        assert main(["quantize", str(export), "-o", str(out), "--precision", "llm=w8", "--overwrite"]) == 2
        assert "input" in capsys.readouterr().err
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    (pictures / "a.png").write_bytes(b"a picture")
    for cache, says in [(export / "llm.onnx", "a file of the export"), (export / "manifest.json", "a file of the export"),
                        (pictures / "a.png", "not a vlmforge calibration cache"), (pictures, "is a folder")]:
        with pytest.raises(ValueError, match=says):
            calibrate(export, pictures, cache_path=cache)
    assert snapshot(export) == before and (pictures / "a.png").read_bytes() == b"a picture"


def _read_only_parent(tmp_path) -> Path:
    if os.geteuid() == 0:  # root writes through permissions; /sys refuses everyone
        return Path("/sys/vlmforge-test/out")
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    return ro / "out"


def test_read_only_output_parent_is_one_line(model_copy, tmp_path, capsys):
    assert _export(model_copy, _read_only_parent(tmp_path)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlmforge export: error: cannot create the output folder") and "\n" not in err


class _Payload:
    """Unpickling this creates a file: proof that a checkpoint was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_checkpoints_export_will_not_or_cannot_load(model_copy, tmp_path, capsys):
    (model_copy / "model.safetensors").rename(tmp_path / "weights.safetensors")
    assert _export(model_copy, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert "has a config but no weights" in err and "\n" not in err
    marker = tmp_path / "unpickled"
    (model_copy / "pytorch_model.bin").write_bytes(pickle.dumps(_Payload(marker)))
    assert _export(model_copy, tmp_path / "out") == 2
    err = capsys.readouterr().err.strip()
    assert "only pickled weights (pytorch_model.bin)" in err and "save_pretrained" in err and "\n" not in err
    assert not marker.exists(), "the pickle was loaded"
    (model_copy / "pytorch_model.bin").unlink()
    (model_copy / "model.safetensors.index.json").write_text('{"weight_map": {"a": "model-00001-of-00002.safetensors"}}')
    assert _export(model_copy, tmp_path / "out") == 2
    assert "missing weight shard(s) model-00001-of-00002.safetensors" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_folder_error_is_a_value_error():
    assert issubclass(FolderError, ValueError)  # callers that catch ValueError catch it
