"""benchmarks/bench_mllama.py at its tiny shape: one counted round, every figure positive, and
vlmforge and transformers generate the same greedy tokens."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mllama.py"


def load_bench():
    """The script by path: benchmarks/ is no package."""
    spec = importlib.util.spec_from_file_location("bench_mllama", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_tiny_bench_reports_positive_figures_and_same_tokens(tmp_path, capsys):
    report_path = tmp_path / "report.json"
    report = load_bench().main(["--shape", "tiny", "--rounds", "1", "--warmup", "0", "--new-tokens", "6",
                                "--threads", "1", "--work-dir", str(tmp_path), "--json", str(report_path)])
    table = capsys.readouterr().out
    assert "tokens identical" in table and "decode_step" in table
    assert json.loads(report_path.read_text()) == json.loads(json.dumps(report))
    for stage in ("vision+connector", "prefill", "decode_step"):
        s = report["stages"][stage]
        assert s["transformers_ms"] > 0 and s["vlmforge_ms"] > 0 and s["ratio"] > 0, stage
    assert report["tokens_identical"]
    assert report["tokens"]["vlmforge"] == report["tokens"]["transformers"]
    assert len(report["tokens"]["vlmforge"]) == 6
