"""``export_model``: Hugging Face VLM folder → ONNX graphs + embeddings + tokenizer + manifest.

Everything is written into a temporary sibling folder and renamed into place at the end, so an
error never leaves a half-written export behind (export/atomic.py).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
import warnings
from pathlib import Path

import numpy as np

from .. import __version__
from ..runtime.manifest import LM_HEADS, MANIFEST_NAME, Artifact, GenerationDefaults, Manifest, TensorSpec, sha256_file
from .atomic import check_output, write_atomically
from .checkpoint import check_weights
from .decoder import as_concat
from .families import read_config, resolve
from .onnx_export import check_graph, export_graph, screen_graph
from .tokenizer import export_tokenizer

KV_LAYOUTS = ("auto", "concat")

log = logging.getLogger("vlmforge.export")


def export_model(model_dir: str | Path, out_dir: str | Path, *, overwrite: bool = False, check: bool = True,
                 lm_head: str = "full", max_pixels: int | None = None, kv_layout: str = "auto") -> Manifest:
    """Export the checkpoint in ``model_dir`` into ``out_dir``; returns the manifest written.

    ``lm_head="screened"``: the LLM graph decides greedy's argmax exactly from an INT8 screen of its
    head (export/screened_head.py): ~27 % fewer bytes per decode step for a Qwen2-0.5B-sized model,
    greedy decoding only, ONNX Runtime only.

    ``max_pixels``: native-resolution models (Qwen2-VL): the image budget's bound, instead of the
    processor's — calls may ask for less, never more.

    ``kv_layout``: "auto" — the append KV layout (export/append_cache.py) where the decoder allows
    it, else concat; "concat" — always past + new per step (what older runtimes read)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local folders only: never reach for a hub
    quiet_libraries()
    model_dir, out_dir = Path(model_dir), Path(out_dir)
    if lm_head not in LM_HEADS:
        raise ValueError(f"lm_head={lm_head!r}: choose one of {', '.join(LM_HEADS)}")
    if kv_layout not in KV_LAYOUTS:
        raise ValueError(f"kv_layout={kv_layout!r}: choose one of {', '.join(KV_LAYOUTS)}")
    family = resolve(read_config(model_dir))
    check_output([model_dir], out_dir, overwrite)
    check_weights(model_dir, getattr(family, "WEIGHT_FOLDERS", ("",)), getattr(family, "WEIGHTS_ONLY_PICKLE", False))
    return write_atomically(out_dir, lambda tmp: _export_into(family, model_dir, tmp, check, lm_head, max_pixels,
                                                                    kv_layout))


def _export_into(family, model_dir: Path, tmp: Path, check: bool, lm_head: str, max_pixels, kv_layout: str) -> Manifest:
    start = time.perf_counter()
    fam = family.prepare(model_dir)
    if max_pixels is not None:
        fam.image.preprocess = _with_budget(fam.image.preprocess, max_pixels, fam.family)
    graphs = {}
    for g in fam.graphs:
        if kv_layout == "concat" and g.cache_layout == "append":
            as_concat(g)
        path = tmp / f"{g.name}.onnx"
        graphs[g.name] = export_graph(g, path)
        if g.cache_layout:
            fam.llm.cache_layout = g.cache_layout
        if check:
            err = check_graph(g, path, fam.atol)
            log.info("%s graph exported, max |onnx - torch| = %.2e", g.name, err)
        if lm_head == "screened" and g.name == "llm":
            screen_graph(g, path)
            fam.llm.head = "screened"
    embed = fam.embed_tokens.float().numpy()
    np.save(tmp / "embed_tokens.npy", embed)
    for name, array in fam.extra_arrays.items():
        np.save(tmp / name, array)
    for name, text in fam.extra_files.items():
        (tmp / name).write_text(text)
    tokenizer = fam.tokenizer or export_tokenizer(model_dir, tmp, fam.image.image_token, fam.image.image_token_id)
    for key, value in fam.tokenizer_overrides.items():
        setattr(tokenizer, key, value)
    manifest = Manifest(
        family=fam.family,
        architecture=fam.architecture,
        graphs=graphs,
        embeddings=TensorSpec(name="embed_tokens.npy", dtype=embed.dtype.name, shape=list(embed.shape)),
        tokenizer=tokenizer,
        image=fam.image,
        llm=fam.llm,
        capabilities=fam.capabilities,
        prompt_suffix=fam.prompt_suffix,
        generation=_with_stops(_generation_defaults(model_dir, fam.decoder_start_token_id), fam.stop_strings),
        source_config=fam.source_config,
        vlmforge_version=__version__,
        vision_towers=fam.vision_towers,
    )
    manifest.artifacts = hash_artifacts(tmp)
    (tmp / MANIFEST_NAME).write_text(manifest.to_json())
    log.info("exported %s in %.1f s", fam.family, time.perf_counter() - start)
    return manifest


def _with_budget(spec, max_pixels: int, family: str):
    if spec.scheme != "native":
        raise ValueError(f"--max-pixels bounds a native-resolution model's image budget; {family} tiles its images "
                         f"({spec.scheme!r} preprocessing) — leave it out")
    return dataclasses.replace(spec, max_pixels=int(max_pixels))  # PreprocessSpec checks the value


def quiet_libraries() -> None:
    """The exporters log every optimisation pass and progress bar; keep warnings that matter."""
    for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._dynamo"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", message=r".*treespec.*LeafSpec", category=FutureWarning)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


def hash_artifacts(folder: Path) -> dict[str, Artifact]:
    """SHA-256 and size of every file in ``folder`` except the manifest itself."""
    return {
        str(p.relative_to(folder)): Artifact(sha256=sha256_file(p), bytes=p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }


def _generation_defaults(model_dir: Path, decoder_start_token_id: int | None) -> GenerationDefaults:
    path = model_dir / "generation_config.json"
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    keys = ("max_new_tokens", "do_sample", "temperature", "top_k", "top_p", "repetition_penalty")
    values = {k: cfg[k] for k in keys if cfg.get(k) is not None}
    return GenerationDefaults(decoder_start_token_id=decoder_start_token_id, **values)


def _with_stops(defaults: GenerationDefaults, stop_strings: list[str]) -> GenerationDefaults:
    defaults.stop_strings = list(stop_strings)
    return defaults
