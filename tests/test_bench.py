"""``vlmforge bench``: both sides generate the same tokens; every figure of the report is there."""

from __future__ import annotations

import json

from vlmforge.cli import main


def test_bench_against_transformers(tiny_llava, tmp_path, capsys):
    model_dir, out = tiny_llava
    report = tmp_path / "bench.json"
    args = ["bench", str(out), "--model-dir", str(model_dir), "--runs", "2", "--max-new-tokens", "6", "--json", str(report)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "tokens identical" in table and "decode tokens/s" in table
    data = json.loads(report.read_text())
    for stage in ("preprocess", "vision+connector", "merge", "prefill", "decode_step"):
        s = data["stages"][stage]
        assert s["transformers_s"] > 0 and s["vlmforge_s"] > 0
    assert data["new_tokens"] == 6 and data["memory_bandwidth_gbs"] > 0
    assert 0 <= data["host_overhead_per_step_s"] < data["stages"]["decode_step"]["vlmforge_s"]
