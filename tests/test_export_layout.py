"""What export writes: graphs with named dynamic axes, external data for big graphs, hashes."""

from __future__ import annotations

import json

import numpy as np


def test_manifest_describes_every_graph(tiny_llava):
    _, out = tiny_llava
    m = json.loads((out / "manifest.json").read_text())
    assert m["format"] == "vlmforge-manifest" and m["version"] == 1
    llm = m["graphs"]["llm"]
    names = [t["name"] for t in llm["inputs"]]
    assert names[:3] == ["inputs_embeds", "attention_mask", "position_ids"]
    assert llm["inputs"][0]["shape"][:2] == ["batch", "sequence"]
    assert llm["inputs"][3]["shape"] == ["batch", 2, "past_sequence", 16]  # GQA: 2 KV heads of 4
    assert m["graphs"]["vision"]["inputs"][0]["shape"][0] == "num_tiles"
    assert set(m["artifacts"]) == {p.name for p in out.iterdir() if p.name != "manifest.json"}
    table = np.load(out / "embed_tokens.npy", mmap_mode="r")
    assert list(table.shape) == m["embeddings"]["shape"]


def test_large_graphs_use_external_data(tiny_llava, tmp_path, monkeypatch):
    """Above the protobuf limit weights go to a side file; force it with a zero threshold."""
    from vlmforge.export import export_model, onnx_export
    from vlmforge.runtime import Pipeline

    monkeypatch.setattr(onnx_export, "EXTERNAL_DATA_BYTES", 0)
    out = tmp_path / "out"
    export_model(tiny_llava[0], out)
    side_files = sorted(p.name for p in out.iterdir() if p.name.endswith(".data"))
    assert side_files == ["connector.onnx.data", "llm.onnx.data", "vision.onnx.data"]
    # the weights moved out (tiny tensors may stay inline)
    assert (out / "llm.onnx").stat().st_size < 0.5 * (tiny_llava[1] / "llm.onnx").stat().st_size
    manifest = json.loads((out / "manifest.json").read_text())
    assert set(side_files) <= set(manifest["artifacts"])
    image = np.random.default_rng(0).integers(0, 256, (30, 30, 3), dtype=np.uint8)
    prompt = "USER: <image>\nHi ASSISTANT:"
    a = Pipeline.load(out).generate(prompt, images=[image], max_new_tokens=8).token_ids
    b = Pipeline.load(tiny_llava[1]).generate(prompt, images=[image], max_new_tokens=8).token_ids
    assert a == b
