"""llama.cpp and onnxruntime-genai rows for bench_long_context.py, on the same decoder weights.

    pip install llama-cpp-python gguf onnxruntime-genai     # each row is skipped when its package is absent

Rows: ``llama-f32`` / ``llama-q8_0`` / ``llama-q4_k_m`` (llama.cpp through llama-cpp-python) and
``genai-fp32`` / ``genai-int4`` (onnxruntime-genai, its model builder's CPU exports). All of them start
from the bench checkpoint's language model and LM head, extracted once as a plain Qwen2ForCausalLM
folder; conversions are cached under ``<work>/peers/`` (each built in a temporary folder or file,
then renamed, so an interrupted build is redone, never reused):

* ``decoder/``: config = the checkpoint's ``text_config`` (``max_position_embeddings`` raised to
  32,768, Qwen2-0.5B's own, so 8,000-token contexts fit the runtimes' position tables — default RoPE,
  no scaling, so no weight changes), weights = ``language_model.*`` + ``lm_head`` (tied here), the
  tokenizer files.
* ``llama-f32.gguf`` / ``llama-q8_0.gguf``: llama.cpp's ``convert_hf_to_gguf.py`` --outtype f32 / q8_0,
  from the llama.cpp sources of the installed llama-cpp-python version (the sdist's vendor/llama.cpp,
  with its own gguf-py, so converter and library agree). The bench tokenizer is trained locally, so
  the converter's BPE pre-tokenizer check does not recognise it; the pre-tokenizer is then declared
  ``qwen2`` (only text ↔ ids is affected, and the benchmark feeds ids). Sources: $LLAMA_CPP_SRC (a
  llama.cpp checkout or a llama-cpp-python / llama.cpp .tar.gz), else ``<work>/peers/llama.cpp``
  once extracted, else the sdist ``pip download`` fetches for the installed version.
* ``llama-q4_k_m.gguf``: ``llama_model_quantize`` (llama-cpp-python's low-level API) from the F32 GGUF.
  K-quants need rows that are multiples of 256; this decoder's width is 896, so llama.cpp uses its
  own fallback types for those tensors (the conversion prints the tensor-type counts).
* ``genai-fp32/`` / ``genai-int4/``: ``python -m onnxruntime_genai.models.builder -i decoder -p
  fp32|int4 -e cpu --extra_options prune_lm_head=true`` (the LM head on the last prompt token only,
  as vlmforge's graph and llama.cpp do; int4: the builder's defaults, block 32, accuracy level 4).

Measurements, one per child process, mirroring the vlmforge rows (same keys):

* decode at context N: neither runtime takes a ready-made cache, so N random token ids are prefilled
  (untimed), then ``steps`` single-token steps are timed (median after 2 warm-ups) — llama.cpp:
  ``Llama.eval([token])`` (one ``llama_decode``, last-token logits, no sampler); onnxruntime-genai:
  ``Generator.generate_next_token()`` (one model run + a greedy argmax). ``bytes_per_token``: weight
  bytes read per step (tensor bytes of the file, less an embedding table used only as a gather) + KV
  bytes at that context in the runtime's KV dtype (llama.cpp: f16, its default; genai: the graph's
  ``past_key_values`` type); ``bound_tokens_per_s`` over ``vlmforge.bench.memory_bandwidth_gbs()``.
* prefill of N tokens: median of ``runs`` from an empty cache, each runtime's own batching (llama.cpp:
  n_batch = n_ubatch = 512, llama-cpp-python's default; genai: one ``append_tokens`` call of the whole
  prompt, its API's way); RSS after load and peak RSS (VmHWM) of the process.
* load: model load twice in one process (llama.cpp: ``Llama(...)`` with a 512-token context, mmap on,
  its default; genai: ``og.Model``), ``first_load_s`` and ``load_s``.

Threads: ``vlmforge.runtime.session.physical_cores()`` for both (llama.cpp n_threads and
n_threads_batch; genai's session intra-op threads through a config overlay).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import numpy as np

ROWS = {  # row → (runtime, precision)
    "llama-f32": ("llama", "f32"), "llama-q8_0": ("llama", "q8_0"), "llama-q4_k_m": ("llama", "q4_k_m"),
    "genai-fp32": ("genai", "fp32"), "genai-int4": ("genai", "int4"),
}
LLAMA_BATCH = 512  # llama-cpp-python's default n_batch / n_ubatch
MAX_POSITIONS = 32768  # Qwen2-0.5B's max_position_embeddings (the bench config keeps 4,096)
KV_BYTES = {"f16": 2, "float16": 2, "float32": 4, "bfloat16": 2}


# -- availability ----------------------------------------------------------------------------------
def available() -> dict[str, str | None]:
    """row → None where it can run, else why not (printed, the row left out)."""
    missing = {}
    for runtime, modules, install in (("llama", ("llama_cpp", "gguf"), "pip install llama-cpp-python gguf"),
                                      ("genai", ("onnxruntime_genai",), "pip install onnxruntime-genai")):
        absent = [m for m in modules if not _importable(m)]
        names = {"llama_cpp": "llama-cpp-python", "onnxruntime_genai": "onnxruntime-genai"}
        missing[runtime] = (f"{' and '.join(names.get(m, m) for m in absent)} not installed: {install}"
                            if absent else None)
    return {row: missing[runtime] for row, (runtime, _) in ROWS.items()}


def _importable(module: str) -> bool:
    try:
        __import__(module)
        return True
    except Exception:  # ImportError, or a wheel whose shared library does not load
        return False


# -- conversions -----------------------------------------------------------------------------------
def prepare(work: Path, hf: Path, rows: list[str]) -> dict[str, Path]:
    """Each requested row's converted model under ``work/peers`` (built once) → row: path."""
    from bench_precision import step

    if not rows:
        return {}
    peers = work / "peers"
    peers.mkdir(parents=True, exist_ok=True)
    decoder = peers / "decoder"
    step("peers: decoder folder", lambda: _atomic_dir(decoder, lambda tmp: extract_decoder(hf, tmp)),
         done=(decoder / "config.json").exists())
    out = {}
    for row in rows:
        runtime, precision = ROWS[row]
        if runtime == "llama":
            out[row] = peers / f"{row}.gguf"
            if precision == "q4_k_m":
                f32 = peers / "llama-f32.gguf"
                step("peers: llama-f32.gguf", lambda: convert_gguf(peers, decoder, f32, "f32"), done=f32.exists())
                step(f"peers: {row}.gguf", lambda o=out[row], s=f32: quantize_gguf(s, o, "q4_k_m"),
                     done=out[row].exists())
            else:
                step(f"peers: {row}.gguf", lambda o=out[row], p=precision: convert_gguf(peers, decoder, o, p),
                     done=out[row].exists())
            print(f"[{row}: {gguf_type_counts(out[row])}]", flush=True)
        else:
            out[row] = peers / row
            step(f"peers: {row}", lambda o=out[row], p=precision, c=peers / "genai-cache":
                 _atomic_dir(o, lambda tmp: build_genai(decoder, tmp, p, c)),
                 done=(out[row] / "genai_config.json").exists())
    return out


def _atomic_dir(out: Path, build) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    build(tmp)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)


def extract_decoder(hf: Path, out: Path) -> None:
    """The LLaVA checkpoint's decoder as a Qwen2ForCausalLM folder: text_config, language model + LM
    head weights (either naming: ``language_model.model.*`` as saved, or transformers 5's module
    paths ``model.language_model.*`` / ``lm_head``), tokenizer files."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    config = json.loads((hf / "config.json").read_text())
    text = dict(config["text_config"])
    tied = bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False)))
    text.update(architectures=["Qwen2ForCausalLM"], tie_word_embeddings=tied,
                max_position_embeddings=max(MAX_POSITIONS, text.get("max_position_embeddings", 0)))
    text.setdefault("model_type", "qwen2")
    text.setdefault("torch_dtype", config.get("torch_dtype", config.get("dtype", "float32")))
    index = hf / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    prefixes = (("language_model.model.", "model."), ("model.language_model.", "model."),
                ("language_model.lm_head.", "lm_head."), ("lm_head.", "lm_head."))
    tensors = {}
    for name in files:
        with safe_open(str(hf / name), framework="pt") as f:
            for key in f.keys():
                for old, new in prefixes:
                    if key.startswith(old):
                        tensors[new + key[len(old):]] = f.get_tensor(key).contiguous()
                        break
    if not any(k.startswith("model.layers.") for k in tensors):
        raise ValueError(f"no language-model weights found in {hf}")
    if tied:
        tensors.pop("lm_head.weight", None)
    elif "lm_head.weight" not in tensors:
        raise ValueError(f"{hf}: untied embeddings but no lm_head weight")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(text, indent=2))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.json",
                 "merges.txt", "chat_template.jinja", "generation_config.json"):
        if (hf / name).exists():
            shutil.copy(hf / name, out / name)


def llama_cpp_source(peers: Path) -> Path:
    """A llama.cpp tree with convert_hf_to_gguf.py, conversion/ and gguf-py/ (see the module docstring)."""
    env = os.environ.get("LLAMA_CPP_SRC")
    if env and Path(env).is_dir():
        src = Path(env)
        return src / "vendor" / "llama.cpp" if (src / "vendor" / "llama.cpp").is_dir() else src
    dest = peers / "llama.cpp"
    if (dest / "convert_hf_to_gguf.py").exists():
        return dest
    if env:
        archive = Path(env)
    else:
        import llama_cpp

        dl = peers / "dl"
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "-d", str(dl),
               f"llama-cpp-python=={llama_cpp.__version__}"]
        print(f"[peers: fetching llama.cpp sources: {' '.join(cmd[2:])}]", flush=True)
        subprocess.run(cmd, check=True)
        archive = next(dl.glob("llama_cpp_python-*.tar.gz"))
    _extract_converter(archive, dest)
    return dest


def _extract_converter(archive: Path, dest: Path) -> None:
    """convert_hf_to_gguf.py, conversion/ and gguf-py/ out of a llama-cpp-python or llama.cpp tarball."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    with tarfile.open(archive) as tar:
        members = []
        for m in tar.getmembers():
            parts = Path(m.name).parts
            root = parts.index("llama.cpp") + 1 if "llama.cpp" in parts else 1  # vendor/llama.cpp/ or the top folder
            rel = Path(*parts[root:]) if len(parts) > root else None
            if rel and (rel.name == "convert_hf_to_gguf.py" and len(rel.parts) == 1
                        or rel.parts[0] in ("conversion", "gguf-py")) and (m.isfile() or m.isdir()):
                m.name = str(rel)
                members.append(m)
        if not any(m.name == "convert_hf_to_gguf.py" for m in members):
            raise FileNotFoundError(f"{archive} has no convert_hf_to_gguf.py")
        tar.extractall(tmp, members=members, filter="data")
    shutil.rmtree(dest, ignore_errors=True)
    tmp.rename(dest)


# run in a child interpreter: the converter with a fallback for an unrecognised BPE pre-tokenizer
_CONVERT = r"""
import runpy, sys
src = sys.argv[1]
sys.path[:0] = [src, src + "/gguf-py"]
import conversion.base as base

for cls in list(vars(base).values()):
    if isinstance(cls, type) and "get_vocab_base_pre" in vars(cls):
        def pre(self, tokenizer, _original=cls.get_vocab_base_pre):
            try:
                return _original(self, tokenizer)
            except NotImplementedError:  # the bench tokenizer is trained locally: no known hash
                print("[peers: unrecognised BPE pre-tokenizer; declaring it qwen2]", flush=True)
                return "qwen2"
        cls.get_vocab_base_pre = pre
sys.argv = [src + "/convert_hf_to_gguf.py", *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def convert_gguf(peers: Path, decoder: Path, out: Path, outtype: str) -> None:
    src = llama_cpp_source(peers)
    tmp = out.with_name(out.name + ".tmp")
    cmd = [sys.executable, "-c", _CONVERT, str(src), str(decoder), "--outtype", outtype, "--outfile", str(tmp)]
    subprocess.run(cmd, check=True)
    os.replace(tmp, out)


def quantize_gguf(src: Path, out: Path, kind: str) -> None:
    import llama_cpp

    from vlmforge.runtime.session import physical_cores

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{kind.upper()}")
    params.nthread = physical_cores()
    tmp = out.with_name(out.name + ".tmp")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(tmp).encode(), params)
    if rc != 0:
        raise RuntimeError(f"llama_model_quantize({src} → {kind}) returned {rc}")
    os.replace(tmp, out)


def gguf_type_counts(path: Path) -> str:
    from collections import Counter

    from gguf import GGUFReader

    counts = Counter(t.tensor_type.name for t in GGUFReader(path).tensors)
    return ", ".join(f"{n} {k}" for k, n in counts.most_common()) + f"; {path.stat().st_size / 1e6:.0f} MB"


def build_genai(decoder: Path, out: Path, precision: str, cache: Path) -> None:
    cmd = [sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(decoder), "-o", str(out),
           "-p", precision, "-e", "cpu", "-c", str(cache), "--extra_options", "prune_lm_head=true"]
    subprocess.run(cmd, check=True)


# -- measurements (each in its own child process) --------------------------------------------------
def measure(kind: str, row: str, path: Path, n: int, steps: int, runs: int) -> dict:
    runtime = ROWS[row][0]
    fn = {("llama", "decode"): llama_decode, ("llama", "prefill"): llama_prefill, ("llama", "load"): llama_load,
          ("genai", "decode"): genai_decode, ("genai", "prefill"): genai_prefill, ("genai", "load"): genai_load}
    if kind == "load":
        return fn[runtime, kind](path)
    return fn[runtime, kind](path, n, steps if kind == "decode" else runs)


def _random_ids(vocab: int, n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, n).astype(np.int32)


def _decoder_config(path: Path) -> dict:
    return json.loads((path.parent / "decoder" / "config.json").read_text())  # what every peer was built from


def _kv_bytes(config: dict, context: int, itemsize: int) -> int:
    heads = config["num_attention_heads"]
    head_dim = config.get("head_dim") or config["hidden_size"] // heads
    return 2 * config["num_hidden_layers"] * config["num_key_value_heads"] * head_dim * context * itemsize


def _bound(step_s: float, weight_bytes: int, kv_bytes: int) -> dict:
    from vlmforge.bench import memory_bandwidth_gbs

    per_token = weight_bytes + kv_bytes
    bandwidth = memory_bandwidth_gbs()
    return {"step_ms": 1e3 * step_s, "tokens_per_s": 1 / step_s, "bytes_per_token": per_token,
            "bandwidth_gbs": bandwidth, "bound_tokens_per_s": bandwidth * 1e9 / per_token, "kv_mb": kv_bytes / 1e6}


# llama.cpp
def _llama(path: Path, n_ctx: int):
    from llama_cpp import Llama

    from vlmforge.runtime.session import physical_cores

    threads = physical_cores()
    return Llama(str(path), n_ctx=n_ctx, n_batch=LLAMA_BATCH, n_ubatch=LLAMA_BATCH, n_threads=threads,
                 n_threads_batch=threads, logits_all=False, verbose=False)


def gguf_weight_bytes(path: Path) -> int:
    """Tensor bytes a decode step reads: all of them, less token_embd when it is only a gather
    (a separate output.weight exists; tied, token_embd is the LM head too)."""
    from gguf import GGUFReader

    tensors = {t.name: int(t.n_bytes) for t in GGUFReader(path).tensors}
    gather_only = "output.weight" in tensors
    return sum(b for name, b in tensors.items() if not (gather_only and name == "token_embd.weight"))


def llama_decode(path: Path, context: int, steps: int) -> dict:
    llm = _llama(path, context + steps + 16)
    ids = _random_ids(llm.n_vocab(), context + steps + 2)
    llm.eval(ids[:context].tolist())  # fills the cache (untimed)
    times = []
    for i in range(steps + 2):  # two warm-up steps
        start = time.perf_counter()
        llm.eval([int(ids[context + i])])
        times.append(time.perf_counter() - start)
    kv = _kv_bytes(_decoder_config(path), context, KV_BYTES["f16"])  # llama.cpp's default type_k/type_v
    return _bound(float(np.median(times[2:])), gguf_weight_bytes(path), kv)


def llama_prefill(path: Path, prompt: int, runs: int) -> dict:
    from bench_precision import peak_rss_mb

    llm = _llama(path, prompt + 16)
    loaded = peak_rss_mb()
    ids = _random_ids(llm.n_vocab(), prompt).tolist()
    times = []
    for _ in range(runs):
        llm.reset()  # the next eval clears the cache from position 0
        start = time.perf_counter()
        llm.eval(ids)
        times.append(time.perf_counter() - start)
    return {"prefill_s": float(np.median(times)), "rss_after_load_mb": loaded, "peak_rss_mb": peak_rss_mb(),
            "kv_mb": _kv_bytes(_decoder_config(path), prompt, KV_BYTES["f16"]) / 1e6}


def llama_load(path: Path) -> dict:
    out = {}
    for label in ("first_load_s", "load_s"):
        start = time.perf_counter()
        llm = _llama(path, 512)
        out[label] = time.perf_counter() - start
        del llm
    return out


# onnxruntime-genai
def _genai_model(folder: Path):
    import onnxruntime_genai as og

    from vlmforge.runtime.session import physical_cores

    config = og.Config(str(folder))
    config.overlay(json.dumps({"model": {"decoder": {"session_options": {
        "intra_op_num_threads": physical_cores(), "inter_op_num_threads": 1}}}}))
    return og.Model(config)


def _genai_generator(model, max_length: int):
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=max_length, do_sample=False)  # greedy
    return og.Generator(model, params)


def genai_weight_bytes(folder: Path) -> tuple[int, int]:
    """(bytes a decode step reads: the graph's initializers, less tables used only by a Gather — the
    embedding lookup —, the KV cache's item size)."""
    import onnx

    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    graph = model.graph
    consumers: dict[str, set] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            consumers.setdefault(name, set()).add((node.op_type, i))

    def nbytes(t) -> int:
        ext = {e.key: e.value for e in t.external_data}
        if "length" in ext:
            return int(ext["length"])
        if t.raw_data:
            return len(t.raw_data)
        itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
        return int(np.prod(t.dims, dtype=np.int64)) * itemsize

    total = 0
    for t in graph.initializer:
        uses = consumers.get(t.name, set())
        if uses and all(op.startswith("Gather") and i == 0 for op, i in uses):
            continue  # an embedding table: a step gathers one row
        total += nbytes(t)
    kv_type = next(i.type.tensor_type.elem_type for i in graph.input if i.name.startswith("past_key_values"))
    return total, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(kv_type)).itemsize


def genai_decode(folder: Path, context: int, steps: int) -> dict:
    weight_bytes, kv_item = genai_weight_bytes(folder)
    bound_args = (weight_bytes, _kv_bytes(_decoder_config(folder), context, kv_item))
    model = _genai_model(folder)
    config = _decoder_config(folder)
    gen = _genai_generator(model, context + steps + 16)
    gen.append_tokens(_random_ids(config["vocab_size"], context))  # fills the cache (untimed)
    gen.generate_next_token()  # picks the token after the prompt from the prompt's logits (no model run)
    times = []
    for _ in range(steps + 2):  # two warm-up steps; each: one single-token model run + argmax
        start = time.perf_counter()
        gen.generate_next_token()
        times.append(time.perf_counter() - start)
    return _bound(float(np.median(times[2:])), *bound_args)


def genai_prefill(folder: Path, prompt: int, runs: int) -> dict:
    from bench_precision import peak_rss_mb

    model = _genai_model(folder)
    loaded = peak_rss_mb()
    config = _decoder_config(folder)
    ids = _random_ids(config["vocab_size"], prompt)
    times = []
    for _ in range(runs):
        gen = _genai_generator(model, prompt + 16)  # a fresh generator: an empty cache
        start = time.perf_counter()
        gen.append_tokens(ids)
        times.append(time.perf_counter() - start)
        del gen
    return {"prefill_s": float(np.median(times)), "rss_after_load_mb": loaded, "peak_rss_mb": peak_rss_mb(),
            "kv_mb": _kv_bytes(config, prompt, genai_weight_bytes(folder)[1]) / 1e6}


def genai_load(folder: Path) -> dict:
    out = {}
    for label in ("first_load_s", "load_s"):
        start = time.perf_counter()
        model = _genai_model(folder)
        out[label] = time.perf_counter() - start
        del model
    return out
