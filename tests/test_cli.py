"""The command line: export → run → profile, and errors as one clear line (exit code 2)."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from vlmforge.cli import main


def test_export_run_profile(tiny_llava, tmp_path, capsys):
    model_dir, _ = tiny_llava
    out = tmp_path / "out"
    assert main(["export", str(model_dir), "-o", str(out)]) == 0
    assert "exported llava" in (printed := capsys.readouterr().out) and "KV cache layout append" in printed
    img = tmp_path / "cat.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(img)
    assert main(["run", str(out), "--image", str(img), "--prompt", "What is in the picture?", "--max-new-tokens", "5"]) == 0
    assert "5 tokens" in capsys.readouterr().err
    report = tmp_path / "profile.json"
    trace, plot = tmp_path / "trace.json", tmp_path / "where.png"
    args = ["profile", str(out), "--image", str(img), "--runs", "3", "--max-new-tokens", "6", "--json", str(report),
            "--trace", str(trace), "--plot", str(plot)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "time to first token" in table and "decode/step" in table
    data = json.loads(report.read_text())
    assert data["runs"] == 3
    for stage in ("image_decode", "preprocess", "vision", "connector", "merge", "prefill", "decode"):
        assert data["stages"][stage]["median_s"] > 0
    assert data["decode_step"]["calls"] == 3 * 5  # the first token comes from prefill
    assert data["gpu_stages"] == {} and data["gpu_decode_step"] is None  # CPU backend: no CUDA events
    assert data["environment"]["preprocess"] == "cpu"
    assert data["decode_tokens_per_s"] > 0 and data["ttft_s"] > 0
    for key in ("median_s", "p90_s", "p95_s", "p99_s", "min_s", "max_s"):
        assert key in data["stages"]["prefill"]
    assert data["memory"]["peak_rss_bytes"] > 0 and "llm.onnx" in data["memory"]["artifact_bytes"]
    events = json.loads(trace.read_text())["traceEvents"]
    tracks = {e["args"]["name"] for e in events if e["name"] == "thread_name"}
    assert {"vision", "prefill", "decode", "sample"} <= tracks
    slices = [e for e in events if e["ph"] == "X"]
    assert sum(e["name"] == "decode" for e in slices) == 3 * 5
    assert all(e["dur"] >= 0 and e["ts"] >= 0 for e in slices)
    chart = np.asarray(Image.open(plot).convert("RGB"))
    assert chart.shape[0] > 100 and len(np.unique(chart.reshape(-1, 3), axis=0)) > 5  # bars drawn, not blank


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("vlmforge export: error:") and "Traceback" not in err
    assert main(["run", str(tmp_path), "--image", "x.png"]) == 2
    assert "manifest.json" in capsys.readouterr().err


def _picture(tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 40, 3), dtype=np.uint8)).save(path)
    return path


def _cli_text(capsys, args) -> str:
    assert main(args) == 0
    return capsys.readouterr().out.rstrip("\n")


def test_plain_prompt_is_one_user_turn_of_the_chat_template(tiny_llava, tmp_path, capsys):
    """--prompt is the question; the CLI renders it as transformers' chat pipelines do (images first)."""
    from vlmforge.runtime import Pipeline

    export, img = tiny_llava[1], _picture(tmp_path)
    pipe = Pipeline.load(export)
    turn = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What color is it?"}]}]
    assert pipe.turn_prompt("What color is it?", 1) == "USER: <image>\nWhat color is it? ASSISTANT:"
    expected = pipe.generate(messages=turn, images=[img], max_new_tokens=6).text
    base = ["run", str(export), "--image", str(img), "--max-new-tokens", "6"]
    assert _cli_text(capsys, base + ["--prompt", "What color is it?"]) == expected
    raw = "USER: <image>\\nWhat color is it? ASSISTANT:"  # --raw: verbatim, as before
    assert _cli_text(capsys, base + ["--raw", "--prompt", raw]) == expected
    system = [{"role": "system", "content": "Be brief."}] + turn
    assert pipe.turn_prompt("What color is it?", 1, "Be brief.") == "Be brief. USER: <image>\nWhat color is it? ASSISTANT:"
    expected_sys = pipe.generate(messages=system, images=[img], max_new_tokens=6).text
    assert _cli_text(capsys, base + ["--prompt", "What color is it?", "--system", "Be brief."]) == expected_sys
    # a placeholder in the plain prompt says where the image goes inside the turn
    assert pipe.turn_prompt("Look: <image> now say", 1) == "USER: Look: <image>\n now say ASSISTANT:"


def test_prompt_errors_are_one_line(tiny_llava, tmp_path, capsys):
    export, img = tiny_llava[1], _picture(tmp_path)
    base = ["run", str(export), "--image", str(img), "--max-new-tokens", "2"]
    for extra, says in [(["--raw"], "--raw sends --prompt verbatim"),
                        (["--prompt", "<image> and <image>"], "2 image placeholder(s) but 1 image(s)"),
                        (["--raw", "--prompt", "no placeholder"], "0 image placeholder(s)"),
                        (["--temperature", "nan", "--sample"], "temperature must be a finite number")]:
        assert main(base + extra) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("vlmforge run: error:") and says in err and "\n" not in err, err
