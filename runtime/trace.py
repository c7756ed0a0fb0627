"""Chrome trace (Perfetto / chrome://tracing) of profiled runs: one track per stage, one slice
per call, runs laid end to end on a common clock."""

from __future__ import annotations

import json

from .stats import STAGES, GenerationStats


def chrome_trace(runs: list[GenerationStats]) -> dict:
    stages = [s for s in STAGES if any(s in r.starts for r in runs)]
    track = {name: i + 1 for i, name in enumerate(stages)}
    events = [{"ph": "M", "name": "process_name", "pid": 1, "args": {"name": "vlmforge"}}]
    events += [
        {"ph": "M", "name": "thread_name", "pid": 1, "tid": tid, "args": {"name": name}}
        for name, tid in track.items()
    ]
    origin = min((min(v) for r in runs for v in r.starts.values() if v), default=0.0)
    for run_index, r in enumerate(runs):
        for stage in stages:
            for start, dur in zip(r.starts.get(stage, []), r.stages.get(stage, [])):
                events.append({
                    "ph": "X", "name": stage, "pid": 1, "tid": track[stage],
                    "ts": (start - origin) * 1e6, "dur": dur * 1e6, "args": {"run": run_index},
                })
    return {"traceEvents": events, "displayTimeUnit": "ms"}


def write_trace(runs: list[GenerationStats], path) -> None:
    with open(path, "w") as f:
        json.dump(chrome_trace(runs), f)
