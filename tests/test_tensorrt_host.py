"""TensorRT host logic that needs no GPU: profiles from the manifest, precision plans, trtexec
lines, the manifest's engines section, stale-engine refusal and backend selection."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from vlmforge.export.tensorrt import BuildOptions, parse_precision, plan, trtexec_commands
from vlmforge.export.tensorrt.build import record_engines
from vlmforge.export.tensorrt.options import plan_graph
from vlmforge.export.tensorrt.profiles import graph_profiles, resolve_limits
from vlmforge.runtime import ManifestError, VlmforgeError, load_manifest
from vlmforge.runtime.backends import BACKENDS, Availability, resolve_backend
from vlmforge.runtime.engines import BuildFingerprint, StaleEngineError, check_fingerprint

ORIN = BuildFingerprint("10.3.0.30", "Orin", "8.7")
PROMPT = "USER: <image>\nWhat is in the picture? ASSISTANT:"
CACHE = [f"past_key_values.{i}.{k}" for i in range(2) for k in ("key", "value")]


@pytest.fixture
def manifest(tiny_llava):
    return load_manifest(tiny_llava[1], verify=False)  # a fresh object per test: tests may edit it


@pytest.fixture
def folder(tiny_llava, tmp_path):
    """A private copy of the export, for tests that write engines and manifests."""
    return shutil.copytree(tiny_llava[1], tmp_path / "model")


# -- profiles ------------------------------------------------------------------------------
def test_vision_and_connector_profiles(manifest):
    tiles, context = resolve_limits(manifest, None, None)
    assert (tiles, context) == (1, 256)  # fixed preprocessing: one tile per image
    assert graph_profiles(manifest, "vision", 4, context) == [{"pixel_values": ((1, 3, 30, 30), (4, 3, 30, 30), (4, 3, 30, 30))}]
    # num_patches comes from the vision graph's image_features output (25 patches)
    assert graph_profiles(manifest, "connector", 4, context) == [{"image_features": ((1, 25, 32), (4, 25, 32), (4, 25, 32))}]


def test_llm_prefill_and_decode_profiles(manifest):
    prefill, decode = graph_profiles(manifest, "llm", 1, 256)
    for profile in (prefill, decode):  # every input gets a range
        assert list(profile) == manifest.graphs["llm"].input_names
    opt = 25 + 64  # one image's tokens + a short question
    assert prefill["inputs_embeds"] == ((1, 1, 64), (1, opt, 64), (1, 256, 64))
    assert prefill["attention_mask"] == ((1, 1), (1, opt), (1, 256))
    assert all(prefill[n] == ((1, 2, 0, 16),) * 3 for n in CACHE)  # prefill starts from an empty cache
    assert decode["inputs_embeds"] == ((1, 1, 64),) * 3 and decode["position_ids"] == ((1, 1),) * 3
    # the append layout's past is the cache's capacity: whole blocks of 64, up to max_context rounded up
    assert manifest.llm.cache_layout == "append"
    assert all(decode[n] == ((1, 2, 1, 16), (1, 2, 192, 16), (1, 2, 256, 16)) for n in CACHE)
    assert decode["attention_mask"] == ((1, 2), (1, 193), (1, 257))
    manifest.llm.cache_layout = "concat"  # past + new in a fresh tensor: past up to max_context - 1
    decode = graph_profiles(manifest, "llm", 1, 256)[1]
    assert all(decode[n] == ((1, 2, 1, 16), (1, 2, opt + 64, 16), (1, 2, 255, 16)) for n in CACHE)
    assert decode["attention_mask"] == ((1, 2), (1, opt + 65), (1, 256))


def test_bounded_window_layers_get_their_own_past_range(manifest):
    """A bounded sliding layer's past (Gemma 3's window_past_sequence) runs to its cache bound only."""
    spec = manifest.graphs["llm"]
    for t in spec.inputs:
        if t.name.startswith("past_key_values.0."):
            t.shape = [d if d != "past_sequence" else "window_past_sequence" for d in t.shape]
    manifest.llm.attention.window, manifest.llm.attention.window_layers, manifest.llm.attention.window_cache = 8, [0], 15
    manifest.llm.cache_layout = "concat"  # a windowed graph always is (export/append_cache.py)
    prefill, decode = graph_profiles(manifest, "llm", 1, 256)
    assert prefill["past_key_values.0.key"] == ((1, 2, 0, 16),) * 3
    assert decode["past_key_values.0.key"] == ((1, 2, 1, 16), (1, 2, 15, 16), (1, 2, 15, 16))
    assert decode["past_key_values.1.key"] == ((1, 2, 1, 16), (1, 2, 153, 16), (1, 2, 255, 16))


def test_limits_and_tile_counts(manifest):
    assert resolve_limits(manifest, 3, 128) == (3, 128)
    with pytest.raises(VlmforgeError, match="between 2 and the model's context 256"):
        resolve_limits(manifest, None, 512)
    with pytest.raises(VlmforgeError, match="--max-tiles must be >= 1"):
        resolve_limits(manifest, 0, None)
    p = manifest.image.preprocess
    p.scheme, p.tile_size, p.grid_pinpoints = "anyres", 30, [[30, 60], [60, 60], [90, 30]]
    assert resolve_limits(manifest, None, None)[0] == 1 + 4  # base image + the 2×2 grid
    p.scheme, p.max_tiles = "hd", 6
    assert resolve_limits(manifest, None, None)[0] == 7


def test_unknown_symbol_is_an_error(manifest):
    manifest.graphs["vision"].inputs[0].shape[0] = "num_frames"
    with pytest.raises(VlmforgeError, match=r"pixel_values has symbolic dim 'num_frames'.*known symbols for vision: num_tiles"):
        graph_profiles(manifest, "vision", 1, 256)


# -- precision -----------------------------------------------------------------------------
def test_parse_precision(manifest):
    names = list(manifest.graphs)
    assert parse_precision("fp16", names) == dict.fromkeys(names, "fp16")
    assert parse_precision("vision=fp16,llm=fp32", names) == {"vision": "fp16", "llm": "fp32"}
    with pytest.raises(VlmforgeError, match="choose one of fp32, fp16, int8, int8-weight, int4-weight"):
        parse_precision("bf8", names)
    with pytest.raises(VlmforgeError, match="GRAPH one of vision, connector, llm"):
        parse_precision("text=fp16", names)


def test_precision_plans(manifest):
    spec = manifest.graphs["llm"]
    assert plan_graph("llm", spec, None).flags == ("FP16",)  # fp32 graph: fp16 by default, weakly typed
    assert plan_graph("llm", spec, "fp32") == plan_graph("llm", spec, "fp32", False)
    assert plan_graph("llm", spec, "fp32").strongly_typed and not plan_graph("llm", spec, "fp32").flags
    with pytest.raises(VlmforgeError, match="explicit quantisation in the graph.*vlmforge.calibration.*fp32 or fp16"):
        plan_graph("llm", spec, "int8")
    spec.precision = "int8"  # Q/DQ graph with fp32 activations: --fp16 --int8
    assert plan_graph("llm", spec, None).flags == ("FP16", "INT8")
    with pytest.raises(VlmforgeError, match="already int8"):
        plan_graph("llm", spec, "fp16")
    spec.inputs[0].dtype = "float16"  # the graph carries every type: strongly typed
    assert plan_graph("llm", spec, "int8").strongly_typed
    spec.precision = "int8-dynamic"  # w8a8: MatMulInteger, ONNX Runtime's alone
    with pytest.raises(VlmforgeError, match="runs on ONNX Runtime only.*--precision llm=int8"):
        plan_graph("llm", spec, None)
    spec.precision = "int4-weight"  # DequantizeLinear on blocked weights
    assert plan_graph("llm", spec, None) == plan_graph("llm", spec, "int4-weight")
    assert plan_graph("llm", spec, None).strongly_typed
    spec.precision = "nf4"
    with pytest.raises(VlmforgeError, match="'nf4', which the TensorRT builder does not know"):
        plan_graph("llm", spec, None)


def test_dla_plan(manifest):
    vision = manifest.graphs["vision"]
    assert plan_graph("vision", vision, "fp16", on_dla=True).flags == ("FP16", "GPU_FALLBACK")
    with pytest.raises(VlmforgeError, match="DLA runs FP16 or INT8 only"):
        plan_graph("vision", vision, "fp32", on_dla=True)
    with pytest.raises(VlmforgeError, match=r"unknown graph\(s\) \['text'\]"):
        plan(manifest, BuildOptions(dla_graphs=("text",)))


# -- trtexec -------------------------------------------------------------------------------
def test_trtexec_lines(manifest):
    options = BuildOptions(precision={"connector": "fp32"}, workspace_gb=2, timing_cache="/tmp/t.cache",
                           dla_graphs=("vision",), dla_core=1, max_tiles=2)
    cmds = trtexec_commands(manifest, options)
    shapes = "pixel_values:2x3x30x30"  # on the DLA: static, pinned to opt
    assert cmds["vision"] == [
        "--onnx=vision.onnx", "--saveEngine=vision.engine", f"--minShapes={shapes}", f"--optShapes={shapes}",
        f"--maxShapes={shapes}", "--fp16", "--memPoolSize=workspace:2048M", "--timingCacheFile=/tmp/t.cache",
        "--useDLACore=1", "--allowGPUFallback", "--skipInference",
    ]
    assert cmds["connector"][2:6] == ["--minShapes=image_features:1x25x32", "--optShapes=image_features:2x25x32",
                                      "--maxShapes=image_features:2x25x32", "--stronglyTyped"]
    llm = cmds["llm"]
    assert [a.split("=")[0] for a in llm[2:8]] == ["--minShapes", "--optShapes", "--maxShapes"] * 2  # prefill, decode
    assert llm[2] == ("--minShapes=inputs_embeds:1x1x64,attention_mask:1x1,position_ids:1x1,"
                      + ",".join(f"{n}:1x2x0x16" for n in CACHE))


def test_build_script_runs_every_build(manifest, folder, tmp_path):
    from vlmforge.cli import main

    script = tmp_path / "build.sh"
    assert main(["build", str(folder), "--emit-trtexec", str(script), "--precision", "llm=fp32"]) == 0
    fake = tmp_path / "trtexec"  # records its arguments, one line per call
    fake.write_text(f'#!/usr/bin/env bash\necho "$PWD $*" >> {tmp_path}/calls\n')
    fake.chmod(0o755)
    subprocess.run(["bash", str(script), str(folder)], check=True, env={"TRTEXEC": str(fake), "PATH": "/usr/bin:/bin"})
    calls = (tmp_path / "calls").read_text().splitlines()
    expected = trtexec_commands(manifest, BuildOptions(precision={"llm": "fp32"}))
    assert calls == [f"{folder} {' '.join(args)}" for args in expected.values()]


# -- manifest engines section + stale engines ------------------------------------------------
def _fake_engines(folder, fingerprint=ORIN):
    for name in ("vision", "connector", "llm"):
        (folder / f"{name}.engine").write_bytes(name.encode() * 100)
    manifest = load_manifest(folder)
    return record_engines(folder, manifest, plan(manifest, BuildOptions()), fingerprint, {"llm": 2.5}, BuildOptions())


def test_engines_round_trip(folder):
    written = _fake_engines(folder)
    loaded = load_manifest(folder)
    assert loaded.engines == written.engines and loaded.version == 1
    llm = loaded.engines.graphs["llm"]
    assert (llm.path, llm.bytes, llm.precision, len(llm.profiles)) == ("llm.engine", 300, "fp16", 2)
    assert llm.profiles[1]["past_key_values.0.key"] == {"min": [1, 2, 1, 16], "opt": [1, 2, 192, 16], "max": [1, 2, 256, 16]}
    assert loaded.engines.fingerprint.build_seconds == 2.5 and loaded.engines.max_context == 256
    data = json.loads((folder / "manifest.json").read_text())
    data.pop("engines")  # a manifest from before this section still loads
    (folder / "manifest.json").write_text(json.dumps(data))
    assert load_manifest(folder).engines is None


def test_fingerprint_checks():
    assert check_fingerprint(ORIN, BuildFingerprint("10.3.0.30", "Orin", "8.7")) == []
    with pytest.raises(StaleEngineError, match=r"TensorRT 10\.3\.0\.30 \(this machine has 10\.7\.0\).*vlmforge build out/m --backend tensorrt"):
        check_fingerprint(ORIN, BuildFingerprint("10.7.0", "Orin", "8.7"), "out/m")
    with pytest.raises(StaleEngineError, match=r"compute capability 8\.7 \(Orin\); this GPU is NVIDIA H100 .* 9\.0"):
        check_fingerprint(ORIN, BuildFingerprint("10.3.0.30", "NVIDIA H100 80GB HBM3", "9.0"))
    notes = check_fingerprint(ORIN, BuildFingerprint("10.3.0.30", "Orin NX", "8.7"))
    assert len(notes) == 1 and "tuned on Orin, not on this Orin NX" in notes[0]


def test_stale_or_modified_engines_are_refused_before_loading(folder, monkeypatch):
    from vlmforge.runtime import tensorrt_session

    _fake_engines(folder)
    manifest = load_manifest(folder)
    monkeypatch.setattr(tensorrt_session, "deserialize", lambda *a: pytest.fail("deserialised a stale engine"))
    monkeypatch.setattr(tensorrt_session, "current_fingerprint", lambda: BuildFingerprint("10.8.0", "Orin", "8.7"))
    with pytest.raises(StaleEngineError, match="rebuild them on this machine: vlmforge build"):
        tensorrt_session.check_engines_usable(folder, manifest)
    monkeypatch.setattr(tensorrt_session, "current_fingerprint", lambda: ORIN)
    tensorrt_session.check_engines_usable(folder, manifest)  # same machine: fine
    (folder / "llm.engine").write_bytes(b"x" * 300)
    with pytest.raises(ManifestError, match="llm.engine does not match its SHA-256"):
        tensorrt_session.check_engines_usable(folder, manifest)


# -- backend selection ---------------------------------------------------------------------
NOTHING = Availability(tensorrt=False, gpu=False, ort_providers=("CPUExecutionProvider",))
GPU_BOX = Availability(tensorrt=True, gpu=True, ort_providers=("CUDAExecutionProvider", "CPUExecutionProvider"))


def test_auto_backend(manifest, folder):
    assert resolve_backend("auto", manifest, GPU_BOX) == "onnxruntime"  # no engines
    with_engines = _fake_engines(folder)
    assert resolve_backend("auto", with_engines, GPU_BOX) == "tensorrt"
    with pytest.warns(UserWarning, match="lacks the tensorrt package; running on onnxruntime"):
        assert resolve_backend("auto", with_engines, NOTHING) == "onnxruntime"


def test_backend_errors_name_the_fix(manifest, folder):
    with pytest.raises(VlmforgeError, match="pip install tensorrt .*python3-libnvinfer"):
        resolve_backend("tensorrt", manifest, NOTHING)
    with pytest.raises(VlmforgeError, match="needs a CUDA GPU"):
        resolve_backend("tensorrt", manifest, Availability(True, False, ()))
    with pytest.raises(VlmforgeError, match="has no TensorRT engines; build them first: vlmforge build"):
        resolve_backend("tensorrt", manifest, GPU_BOX)
    with pytest.raises(VlmforgeError, match="TensorrtExecutionProvider.*pip install onnxruntime-gpu"):
        resolve_backend("onnxruntime-tensorrt", manifest, GPU_BOX)
    assert resolve_backend("onnxruntime-cuda", manifest, GPU_BOX) == "onnxruntime-cuda"
    with pytest.raises(VlmforgeError, match="available: auto, onnxruntime, tensorrt, onnxruntime-cuda, onnxruntime-tensorrt"):
        resolve_backend("trt", manifest, GPU_BOX)


def test_this_machine_refuses_tensorrt_clearly(folder, capsys):
    from vlmforge.cli import BACKENDS as CLI_BACKENDS, main

    assert CLI_BACKENDS == BACKENDS
    _fake_engines(folder)
    with pytest.warns(UserWarning, match="has TensorRT engines"):  # auto: engines, but no TensorRT here
        assert main(["run", str(folder), "--max-new-tokens", "2", "--prompt", "Hi"]) == 0
    capsys.readouterr()
    assert main(["run", str(folder), "--backend", "tensorrt", "--prompt", "Hi"]) == 2
    assert "pip install tensorrt" in capsys.readouterr().err
    assert main(["build", str(folder), "--precision", "int8"]) == 2  # planned before TensorRT is needed
    assert "explicit quantisation" in capsys.readouterr().err
    assert main(["build", str(folder)]) == 2
    assert "pip install tensorrt" in capsys.readouterr().err


def test_ort_tensorrt_provider_options(manifest, tmp_path):
    from vlmforge.runtime.ort_gpu import provider_list

    (name, options), cuda = provider_list("onnxruntime-tensorrt", tmp_path, manifest, "llm")
    assert (name, cuda, options["trt_fp16_enable"]) == ("TensorrtExecutionProvider", "CUDAExecutionProvider", True)
    # one profile covering prefill and decode, with decode's opt shapes
    assert options["trt_profile_min_shapes"].startswith("inputs_embeds:1x1x64,attention_mask:1x1,position_ids:1x1,")
    assert options["trt_profile_max_shapes"].endswith("past_key_values.1.value:1x2x256x16")
    assert options["trt_profile_opt_shapes"].startswith("inputs_embeds:1x1x64,attention_mask:1x193,")


def test_runtime_import_loads_no_gpu_stack():
    code = ("import sys, vlmforge.runtime, vlmforge.runtime.backends; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'tensorrt', 'cuda', 'torch', 'onnx'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_tensorrt_backend_over_fake_tensorrt_gives_ort_tokens(folder, monkeypatch, rng):
    """Our TensorRT session and decoder over stand-in TensorRT/CUDA modules whose "engines" are
    the ONNX graphs (tests/fake_tensorrt.py): buffers, profile choice, shape checks and the
    append cache (its growth by a block, the strided column writes) must reproduce ONNX Runtime exactly."""
    import fake_tensorrt

    fake_tensorrt.install(monkeypatch)
    with pytest.warns(UserWarning, match="GPU preprocessing unavailable"):  # no CUDA kernels behind the fake
        pipe = _check_tensorrt_backend(folder, rng, BuildFingerprint("10.99.0", "Fake GPU", "8.7"))
    assert getattr(pipe.preprocess, "device", "cpu") == "cpu"


def test_tensorrt_ping_pong_cache_on_a_concat_export(tiny_llava, tmp_path, monkeypatch, rng):
    """``export --kv-layout concat``: present.* = past + new, the decoder's two buffer sets alternate."""
    import fake_tensorrt
    from vlmforge.export import export_model

    folder = tmp_path / "concat"
    manifest = export_model(tiny_llava[0], folder, kv_layout="concat", check=False)
    assert manifest.llm.cache_layout == "concat" and "present.0.key" in manifest.graphs["llm"].output_names
    fake_tensorrt.install(monkeypatch)
    with pytest.warns(UserWarning, match="GPU preprocessing unavailable"):
        _check_tensorrt_backend(folder, rng, BuildFingerprint("10.99.0", "Fake GPU", "8.7"))


def _real_gpu() -> bool:
    try:
        from vlmforge.runtime.cuda import gpu_count

        return gpu_count() > 0
    except Exception:
        return False


@pytest.mark.gpu
@pytest.mark.skipif(not _real_gpu(), reason="needs cuda-python and a CUDA GPU")
@pytest.mark.parametrize("layout", ["append", "concat"])
def test_tensorrt_backend_on_real_cuda_memory(layout, tiny_llava, folder, monkeypatch, rng):
    """The same over real CUDA (a GPU without TensorRT): our device buffers, pinned arrays,
    streams, events and the KV cache (append: blocks and strided column writes; concat: ping-pong)
    live in GPU memory; only the engine is ONNX Runtime between two cudaMemcpy. Also the device
    query and GPU memory the profile reports."""
    import fake_tensorrt
    from vlmforge.export import export_model
    from vlmforge.runtime import Pipeline
    from vlmforge.runtime.cuda import device_name_and_capability, memory_used_bytes
    from vlmforge.runtime.profile import profile

    if layout == "concat":
        folder = folder.parent / "concat"
        export_model(tiny_llava[0], folder, kv_layout="concat", check=False)
    assert load_manifest(folder).llm.cache_layout == layout
    fake_tensorrt.install(monkeypatch, real_cuda=True)
    name, capability = device_name_and_capability()
    assert name and capability.count(".") == 1
    pipe = _check_tensorrt_backend(folder, rng, BuildFingerprint("10.99.0", name, capability))
    # preprocessing ran on the GPU (auto with TensorRT): the tile batch was bound in place, never uploaded
    assert pipe.preprocess.device == "cuda" and "pixel_values" not in pipe.vision.buffers
    report = profile(pipe, PROMPT, [rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)], runs=2, warmup=1, max_new_tokens=3)
    assert report.as_dict()["gpu_stages"]["preprocess"]["median_s"] > 0  # the tiling kernels, CUDA events
    assert "gpu ms" in report.table()
    image = rng.integers(0, 256, (45, 70, 3), dtype=np.uint8)
    on_cpu = Pipeline.load(folder, preprocess="cpu").generate(PROMPT, images=[image], max_new_tokens=8)
    assert pipe.generate(PROMPT, images=[image], max_new_tokens=8).token_ids == on_cpu.token_ids
    mem = memory_used_bytes()
    assert 0 < mem["gpu_used_bytes"] < mem["gpu_total_bytes"]
    stats = pipe.generate(PROMPT, images=[rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)], max_new_tokens=4).stats
    assert stats.num_generated_tokens == 4 and stats.ttft_s > 0


def _check_tensorrt_backend(folder, rng, fingerprint: BuildFingerprint):
    from vlmforge.runtime import Pipeline, PromptError
    from vlmforge.runtime.profile import profile

    manifest = load_manifest(folder)
    options = BuildOptions(max_context=96)
    fake_tensorrt_engines(folder, manifest, plan(manifest, options))
    record_engines(folder, manifest, plan(manifest, options), fingerprint, {}, options)
    image = rng.integers(0, 256, (40, 56, 3), dtype=np.uint8)
    new = 30  # the prompt's 40-odd tokens + 30 cross the append cache's first block (64 tokens)
    ref = Pipeline.load(folder, backend="onnxruntime").generate(PROMPT, images=[image], max_new_tokens=new, ignore_eos=True)
    pipe = Pipeline.load(folder)  # auto: engines + "TensorRT" + "GPU"
    assert pipe.backend == "tensorrt"
    out = pipe.generate(PROMPT, images=[image], max_new_tokens=new, ignore_eos=True)
    assert out.token_ids == ref.token_ids and len(out.token_ids) == new
    assert out.stats.kv_cache_bytes == ref.stats.kv_cache_bytes == pipe.decoder.cache.nbytes
    column = 2 * 16 * 4  # one token of one tensor: kv_heads × head_dim × float32
    if manifest.llm.cache_layout == "append":  # 4 tensors × whole blocks, + a one-token scratch column each
        assert out.stats.num_prompt_tokens + new - 1 > 64 and pipe.decoder.cache.capacity == 128
        assert pipe.decoder.cache.allocated_bytes == 4 * column * (128 + 1)
    else:
        assert pipe.decoder.cache.allocated_bytes == 2 * 4 * 96 * column  # two sets × 4 tensors × 96 tokens
    with pytest.raises(PromptError, match="the model's context is 96"):  # the engine's limit, not the model's 256
        pipe.generate("word " * 100, max_new_tokens=1)
    pipe.decoder.reset()
    with pytest.raises(PromptError, match="97 tokens exceed the 96 the TensorRT engine was built for"):
        pipe.decoder.step(np.zeros((1, 97, 64), np.float32), np.arange(97)[None])
    with pytest.raises(VlmforgeError, match=r"outside the engine's profile \(1, 3, 30, 30\)\.\.\(1, 3, 30, 30\)"):
        pipe.vision.run({"pixel_values": np.zeros((2, 3, 30, 30), np.float32)})
    report = profile(pipe, PROMPT, [image], runs=2, warmup=0, max_new_tokens=5).as_dict()
    assert {"vision", "connector", "prefill", "decode"} <= set(report["gpu_stages"])  # CUDA events per engine call
    assert report["gpu_decode_step"]["calls"] == 2 * 4 and report["gpu_stages"]["vision"]["median_s"] > 0
    return pipe


def fake_tensorrt_engines(folder, manifest, build_plan):
    import fake_tensorrt

    fake_tensorrt.write_fake_engines(folder, manifest, build_plan)


def test_profile_reports_gpu_memory_on_gpu_backends(monkeypatch):
    """memory() asks CUDA for used/total device memory on GPU backends, and never on the CPU one."""
    from types import SimpleNamespace

    from vlmforge.runtime import cuda, profile

    ok = object()
    fake = SimpleNamespace(cudaError_t=SimpleNamespace(cudaSuccess=ok), cudaSetDevice=lambda d: (ok,),
                           cudaMemGetInfo=lambda: (ok, 3 * 2**30, 8 * 2**30))
    monkeypatch.setattr(cuda, "cudart", lambda: fake)
    manifest = SimpleNamespace(artifacts={})
    gpu = profile.memory(SimpleNamespace(backend="tensorrt", manifest=manifest))
    assert gpu["gpu_used_bytes"] == 5 * 2**30 and gpu["gpu_total_bytes"] == 8 * 2**30
    assert "gpu_used_bytes" not in profile.memory(SimpleNamespace(backend="onnxruntime", manifest=manifest))


def test_preprocess_choice(monkeypatch, manifest):
    """GPU preprocessing only where an engine reads device memory: asked for elsewhere it is refused
    with the reason; "auto" without usable CUDA kernels falls back to NumPy with a warning."""
    from types import SimpleNamespace

    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime.preprocess import choose_preprocess

    spec = manifest.image.preprocess
    image = np.random.default_rng(0).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    cpu = choose_preprocess(spec, object(), "auto")
    np.testing.assert_array_equal(cpu(image)[0], tile_and_patchify(image, spec)[0])
    with pytest.raises(VlmforgeError, match="only the tensorrt backend reads"):
        choose_preprocess(spec, object(), "gpu")
    with pytest.raises(ValueError, match="choose one of auto, cpu, gpu"):
        choose_preprocess(spec, object(), "cuda")
    monkeypatch.setitem(sys.modules, "cuda.bindings", None)  # as if cuda-python were missing
    engine = SimpleNamespace(accepts_device_arrays=True, spec=SimpleNamespace(input_names=["pixel_values"]),
                             input_dtype=lambda name: np.dtype(np.float32))
    with pytest.warns(UserWarning, match="GPU preprocessing unavailable .*cuda-python"):
        assert choose_preprocess(spec, engine, "auto")(image)[1] == tile_and_patchify(image, spec)[1]
    with pytest.raises(VlmforgeError, match="GPU preprocessing is unavailable: .*cuda-python.*preprocess='cpu'"):
        choose_preprocess(spec, engine, "gpu")
