"""Per-graph options on the command line: one word for every graph, or ``GRAPH=WORD,…``."""

from __future__ import annotations

from typing import Callable


def parse_per_graph(text: str, graph_names, word: Callable[[str, str], str], error: type, example: str) -> dict[str, str]:
    """``"fp16"`` → every graph; ``"vision=int8,llm=w4"`` → those graphs. ``word(value, where)``
    checks and normalises a value; a malformed item raises ``error`` naming the graphs and ``example``."""
    if "=" not in text:
        value = word(text.strip(), "every graph")
        return {name: value for name in graph_names}
    out = {}
    for item in text.split(","):
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or name not in graph_names:
            raise error(
                f"--precision item {item!r} is not GRAPH=PRECISION with GRAPH one of {', '.join(graph_names)}; "
                f"e.g. {example}"
            )
        out[name] = word(value.strip(), name)
    return out
