"""Cold start (runtime/load_cache.py): a second load reuses the optimised graphs and the verified
hashes, answers the same, and still catches a changed artifact; a damaged cache entry falls back."""

from __future__ import annotations

import shutil

import pytest

from conftest import random_images


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VLMFORGE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("VLMFORGE_LOAD_CACHE", "1")  # off for the other tests (conftest.py)
    return tmp_path / "cache"


def counting(monkeypatch, owner, name):
    calls = []
    real = getattr(owner, name)

    def wrapped(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, staticmethod(wrapped) if isinstance(owner.__dict__[name], staticmethod) else wrapped)
    return calls


def test_second_load_skips_optimisation_and_hashing(tiny_llava, cache, monkeypatch, rng):
    import vlmforge.runtime.manifest as manifest_mod
    from vlmforge.runtime import Pipeline
    from vlmforge.runtime.session import OrtSession

    _, out = tiny_llava
    image = random_images(rng, [(40, 60)])[0]
    first = Pipeline.load(out)
    want = first.generate(first.turn_prompt("What is it?", 1), images=[image], max_new_tokens=8).token_ids
    assert len(list((cache / "ort").iterdir())) == 3  # vision, connector, llm
    opened = counting(monkeypatch, OrtSession, "_open")
    hashed = counting(monkeypatch, manifest_mod, "sha256_file")
    again = Pipeline.load(out)
    assert hashed == [] and all(kw.get("optimise") is False for _, kw in opened) and len(opened) == 3  # optimise=False
    assert again.generate(again.turn_prompt("What is it?", 1), images=[image], max_new_tokens=8).token_ids == want
    Pipeline.load(out, verify="full")
    assert len(hashed) == len(again.manifest.artifacts)


def test_a_changed_artifact_is_still_caught(tiny_llava, cache, tmp_path):
    from vlmforge.runtime import Pipeline
    from vlmforge.runtime.manifest import ManifestError

    out = tmp_path / "copy"
    shutil.copytree(tiny_llava[1], out)
    Pipeline.load(out)  # verified and recorded
    path = out / "embed_tokens.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, other bytes, a new mtime
    path.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="embed_tokens.npy does not match its SHA-256"):
        Pipeline.load(out)


def test_a_damaged_entry_falls_back_and_the_switch_turns_it_off(tiny_llava, cache, monkeypatch):
    from vlmforge.runtime import Pipeline

    _, out = tiny_llava
    Pipeline.load(out)
    for entry in (cache / "ort").iterdir():
        (entry / "model.onnx").write_bytes(b"not a model")
    Pipeline.load(out)  # each damaged entry dropped, the graph optimised and saved again
    assert all((e / "model.onnx").stat().st_size > 100 for e in (cache / "ort").iterdir())
    shutil.rmtree(cache)
    monkeypatch.setenv("VLMFORGE_LOAD_CACHE", "0")
    Pipeline.load(out)
    assert not cache.exists()
