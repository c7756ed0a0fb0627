"""The Qwen2-VL line (Qwen2-VL, Qwen2.5-VL with windowed attention, Qwen3-VL with DeepStack and
interleaved M-RoPE): the native-resolution kernel against Qwen2VLImageProcessorPil, each graph
against its torch module, greedy tokens against transformers' generate with M-RoPE positions, and
the image-token budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlmforge.kernels import tile_and_patchify, vision_geometry
from vlmforge.runtime import Pipeline, PromptError

# (h, w): landscape, below min_pixels (upscaled), 1:8, portrait
SIZES = [(60, 80), (20, 20), (30, 240), (70, 30)]
NEW_TOKENS = 24
VERSIONS = {"qwen2_vl": "2", "qwen2_5_vl": "2.5", "qwen3_vl": "3"}


@pytest.fixture(scope="module", params=list(VERSIONS.values()), ids=list(VERSIONS))
def qwen(request, tmp_path_factory):
    from vlmforge.export import export_model
    from vlmforge.export.tiny_qwen2_vl import make_tiny_qwen2_vl

    root = tmp_path_factory.mktemp("qwen2_vl")
    model_dir = make_tiny_qwen2_vl(root / "hf", version=request.param)
    export_model(model_dir, root / "out")
    return model_dir, root / "out"


@pytest.fixture(scope="module")
def pipe(qwen):
    return Pipeline.load(qwen[1])


@pytest.fixture(scope="module")
def hf(qwen, pipe):
    return _hf_models(qwen[0], VERSIONS[pipe.manifest.family])


def _images(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in sizes]


@pytest.mark.parametrize("backend", ["numpy", "c"])
def test_kernel_matches_the_processor(pipe, hf, backend):
    processor = hf[2]
    spec = pipe.manifest.image.preprocess
    for image in _images(SIZES + [(500, 375)]):
        ref = processor(images=image, return_tensors="np")
        pixels, layout = tile_and_patchify(image, spec, backend=backend)
        assert (1, *layout.grid) == tuple(ref["image_grid_thw"][0])
        np.testing.assert_array_equal(pixels, ref["pixel_values"])
        assert layout.num_image_tokens == ref["image_grid_thw"][0].prod() // spec.merge_size**2


def test_graphs_match_the_torch_modules(pipe, hf):
    model = hf[0]
    image = _images([(60, 80)])[0]
    spec = pipe.manifest.image.preprocess
    pixels, layout = tile_and_patchify(image, spec)
    feeds = {"pixel_values": pixels, **vision_geometry(layout, spec)}
    outputs = pipe.vision.run(feeds)
    merged = pipe.connector.run({k: v for k, v in outputs.items() if k in pipe.connector.spec.input_names})
    grid = torch.tensor([[1, *layout.grid]])
    with torch.no_grad():
        ref = model.model.visual(torch.as_tensor(pixels), grid_thw=grid)
    if not spec.window_size:  # Qwen2.5-VL returns its last hidden state in window order; the merged output is in order
        assert np.abs(outputs["image_features"] - ref.last_hidden_state.numpy()).max() < 1e-4
    assert np.abs(merged["image_embeds"] - ref.pooler_output.numpy()).max() < 1e-4
    deepstack = getattr(ref, "deepstack_features", None)
    if deepstack:  # Qwen3-VL: one merged feature per DeepStack layer
        assert np.abs(merged["deepstack_embeds"] - torch.stack(deepstack).numpy()).max() < 1e-4
    seq, hidden = 9, model.config.text_config.hidden_size
    rng = np.random.default_rng(1)
    inputs = rng.standard_normal((1, seq, hidden)).astype(np.float32)
    positions = np.stack([np.arange(seq), np.arange(seq) + 2, np.arange(seq) * 2])[:, None, :].astype(np.int64)
    visual = np.zeros((1, seq), dtype=bool)
    visual[0, 2:6] = True  # DeepStack features at four "image" positions, as transformers scatters them
    extra, kwargs = {}, {}
    for declared in pipe.manifest.llm.token_inputs:
        rows = rng.standard_normal((declared.layers, 4, hidden)).astype(np.float32)
        dense = np.zeros((declared.layers, 1, seq, hidden), np.float32)
        dense[:, 0, 2:6] = rows
        extra[declared.name] = dense
        kwargs = dict(visual_pos_masks=torch.as_tensor(visual), deepstack_visual_embeds=list(torch.as_tensor(rows)))
    pipe.decoder.reset()
    logits = np.array(pipe.decoder.step(inputs, positions, extra))
    with torch.no_grad():
        out = model.model.language_model(inputs_embeds=torch.as_tensor(inputs), position_ids=torch.as_tensor(positions),
                                         **kwargs)
        ref_logits = model.lm_head(out.last_hidden_state)[0, -1].numpy()
    assert np.abs(logits - ref_logits).max() < 1e-4


def _hf_generate(hf, text: str, images) -> list[int]:
    """What Qwen2VLProcessor + generate do (the processor itself needs torchvision for its video half)."""
    model, tokenizer, processor = hf
    kwargs = {}
    if images:
        px = processor(images=images, return_tensors="np")
        head, *rest = text.split("<|image_pad|>")
        text = head + "".join("<|image_pad|>" * int(g.prod() // 4) + r for g, r in zip(px["image_grid_thw"], rest))
    ids = tokenizer(text, return_tensors="pt")["input_ids"]
    if images:
        kwargs = dict(pixel_values=torch.as_tensor(px["pixel_values"]), image_grid_thw=torch.as_tensor(px["image_grid_thw"]),
                      mm_token_type_ids=(ids == model.config.image_token_id).int())
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                             do_sample=False, **kwargs)
    return out[0, ids.shape[1]:].tolist()


@pytest.mark.parametrize("sizes", [[SIZES[0]], [SIZES[1]], [SIZES[2]], [SIZES[0], SIZES[3]], []],
                         ids=["landscape", "below-min-pixels", "1:8", "two-images", "text-only"])
def test_greedy_tokens_match_transformers(pipe, hf, sizes):
    images = _images(sizes, seed=len(sizes))
    text = pipe.turn_prompt("What is in the picture?", len(images))
    ours = pipe.generate(text, images=images, max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert ours.token_ids == _hf_generate(hf, text, images)
    assert len(ours.token_ids) == NEW_TOKENS
    assert ours.stats.num_image_tokens == sum(tile_and_patchify(i, pipe.manifest.image.preprocess)[1].num_image_tokens
                                              for i in images)


def test_several_pictures_go_through_one_packed_vision_call(pipe):
    """Three pictures of a prompt: one vision and one connector call over their concatenated
    patches (block mask from the packed segment / window ids), each picture's embeddings (and
    DeepStack features) those of its own call; the two-image case above equals transformers."""
    from vlmforge.runtime.packing import pack_groups
    from vlmforge.runtime.stats import StageTimer

    images = _images([SIZES[0], SIZES[3], (40, 40)], seed=9)
    spec = pipe.manifest.image.preprocess
    pipe.vision_cache.clear()
    timer = StageTimer()
    packed = pipe._encode_images(images, timer, "", spec)
    assert len(timer.times["vision"]) == len(timer.times["connector"]) == 1
    for image, media in zip(images, packed):
        alone = pipe._encode(image, StageTimer(), "", spec, cache=False)
        np.testing.assert_allclose(media.embeds, alone.embeds, atol=2e-5)
        assert media.extras.keys() == alone.extras.keys() and media.layout == alone.layout
        for name in media.extras:
            np.testing.assert_allclose(media.extras[name], alone.extras[name], atol=2e-5)
    timer = StageTimer()  # all three cached now: no call at all
    assert [m.key for m in pipe._encode_images(images, timer, "", spec)] == [m.key for m in packed]
    assert "vision" not in timer.times and timer.counts["vision_cache_hit"] == 3
    # a call never exceeds the export's patch bound for one picture (TensorRT's profile)
    assert pack_groups([3, 3, 5, 2, 9], 6) == [[0, 1], [2], [3], [4]]


def test_the_prompt_speaks_qwen(pipe):
    assert pipe.turn_prompt("Hi?", 1) == ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
                                         "<|vision_start|><|image_pad|><|vision_end|>Hi?<|im_end|>\n<|im_start|>assistant\n")
    with pytest.raises(PromptError, match="image placeholder"):
        pipe.generate(messages=[{"role": "user", "content": "look: <|image_pad|>"}], images=[], max_new_tokens=1)
    assert pipe.manifest.llm.positions.scheme == "mrope"


def test_a_smaller_budget_per_call_counts_tokens_as_transformers_does(pipe, hf):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    model, tokenizer, processor = hf
    image = _images([(200, 300)], seed=5)[0]
    budget = 28 * 28 * 16
    small = Qwen2VLImageProcessorPil(min_pixels=processor.size["shortest_edge"], max_pixels=budget,
                                     patch_size=processor.patch_size, merge_size=processor.merge_size,
                                     image_mean=processor.image_mean, image_std=processor.image_std)
    text = pipe.turn_prompt("Describe it.", 1)
    full = pipe.generate(text, images=[image], max_new_tokens=2)
    ours = pipe.generate(text, images=[image], max_new_tokens=NEW_TOKENS, ignore_eos=True, max_pixels=budget)
    expected = int(small(images=image, return_tensors="np")["image_grid_thw"][0].prod()) // 4
    assert ours.stats.image_tokens == [expected] and expected < full.stats.image_tokens[0]
    assert ours.token_ids == _hf_generate((model, tokenizer, small), text, [image])


@pytest.mark.parametrize("budget,says", [(28 * 28 * 10**4, "above this export's bound"), (100, "below"),
                                         (2.5, "integer")])
def test_bad_budgets(pipe, budget, says):
    with pytest.raises(PromptError, match=says):
        pipe.generate(pipe.turn_prompt("Hi", 1), images=_images([(40, 40)]), max_new_tokens=1, max_pixels=budget)


def test_export_bound_and_its_refusal(tmp_path, tiny_llava):
    """The bound is the line's shared export code: one version (2.5, windowed) carries it, not all three."""
    from vlmforge.export import export_model
    from vlmforge.export.tiny_qwen2_vl import make_tiny_qwen2_vl
    from vlmforge.runtime.manifest import load_manifest

    qwen = (make_tiny_qwen2_vl(tmp_path / "hf", version=VERSIONS["qwen2_5_vl"]),)
    with pytest.raises(ValueError, match="min_pixels <= max_pixels"):
        export_model(qwen[0], tmp_path / "tiny", check=False, max_pixels=100)
    assert not (tmp_path / "tiny").exists()
    with pytest.raises(ValueError, match="tiles its images"):
        export_model(tiny_llava[0], tmp_path / "llava", check=False, max_pixels=10**6)
    manifest = export_model(qwen[0], tmp_path / "bounded", check=False, max_pixels=28 * 28 * 8)
    assert manifest.image.preprocess.max_pixels == 28 * 28 * 8 == load_manifest(tmp_path / "bounded").image.preprocess.max_pixels


def test_tensorrt_profiles_bound_the_patch_axis_by_the_budget(pipe):
    from vlmforge.export.tensorrt import BuildOptions, trtexec_commands

    manifest = pipe.manifest
    spec = manifest.image.preprocess
    most = spec.max_pixels // spec.patch_size**2  # 28·28·64 px → 256 patches of 14² (196 of 16²)
    cmds = trtexec_commands(manifest, BuildOptions(precision={"vision": "fp16"}))
    extra = ",window_ids:{n}" if spec.window_size else ""
    extra += ",interp_indices:{n}x4,interp_weights:{n}x4" if spec.position_grid else ""
    width = 3 * spec.temporal_patch_size * spec.patch_size**2
    vision = {a.split("=")[0]: a.split("=")[1] for a in cmds["vision"] if "Shapes" in a}
    for flag, n in [("--minShapes", 4), ("--optShapes", most), ("--maxShapes", most)]:
        assert vision[flag] == f"pixel_values:{n}x{width},rotary_pos_ids:{n}x2,segment_ids:{n}" + extra.format(n=n)
    connector = next(a for a in cmds["connector"] if a.startswith("--maxShapes"))
    assert connector.startswith(f"--maxShapes=image_features:{most}x32")
    prefill_min = next(a for a in cmds["llm"] if a.startswith("--minShapes"))
    assert "position_ids:3x1x1" in prefill_min
    for declared in manifest.llm.token_inputs:  # DeepStack: (layers, batch, seq, hidden), seq bounded like the prompt
        assert f"{declared.name}:{declared.layers}x1x1x{manifest.llm.hidden_size}" in prefill_min
        assert f"deepstack_features:{declared.layers}x{most}x32" in connector
    limited = trtexec_commands(manifest, BuildOptions(max_tiles=64))
    assert any(a.startswith(f"--maxShapes=pixel_values:64x{width}") for a in limited["vision"])


def test_tensorrt_backend_runs_mrope_positions_and_deepstack_inputs(qwen, pipe, tmp_path, monkeypatch):
    """Our TensorRT session and decoder over tests/fake_tensorrt.py (engines = the ONNX graphs, the
    build's profiles enforced): (3, 1, s) M-RoPE positions and Qwen3's per-token DeepStack inputs
    staged per step give ONNX Runtime's tokens — for an image and for text only."""
    import shutil

    import fake_tensorrt
    from vlmforge.export.tensorrt import BuildOptions, plan
    from vlmforge.export.tensorrt.build import record_engines
    from vlmforge.runtime import load_manifest
    from vlmforge.runtime.engines import BuildFingerprint

    folder = tmp_path / "engines"
    shutil.copytree(qwen[1], folder)
    manifest = load_manifest(folder)
    options = BuildOptions(max_context=192)
    fake_tensorrt.write_fake_engines(folder, manifest, plan(manifest, options))
    record_engines(folder, manifest, plan(manifest, options), BuildFingerprint("10.99.0", "Fake GPU", "8.7"), {}, options)
    fake_tensorrt.install(monkeypatch)
    with pytest.warns(UserWarning, match="GPU preprocessing unavailable"):
        trt = Pipeline.load(folder, backend="tensorrt")
    assert trt.decoder.position_rows == 3 and set(trt.decoder.step_inputs) == set(manifest.llm.step_inputs)
    for images, text in (([_images([(60, 80)])[0]], "Describe it."), ([], "Tell me a story.")):
        messages = [{"role": "user", "content": [{"type": "image"}] * len(images) + [{"type": "text", "text": text}]}]
        ref = pipe.generate(messages=messages, images=images, max_new_tokens=12, ignore_eos=True)
        got = trt.generate(messages=messages, images=images, max_new_tokens=12, ignore_eos=True)
        assert got.token_ids == ref.token_ids and len(got.token_ids) == 12


def _random_config(rng) -> dict:
    """Depths, widths, heads, KV heads, mrope_section, window size and full-attention layers drawn at random."""
    heads = int(rng.choice([2, 4]))
    hidden = heads * int(rng.choice([8, 12, 16]))
    half = hidden // heads // 2
    cut = sorted(rng.choice(np.arange(1, half), size=2, replace=False))
    depth = int(rng.integers(1, 4))
    vision_heads = int(rng.choice([2, 4]))
    return dict(version=str(rng.choice(["2", "2.5", "3"])), depth=depth, vision_heads=vision_heads,
                embed_dim=vision_heads * int(rng.choice([4, 8, 12])), hidden=hidden, heads=heads,
                kv_heads=int(rng.choice([k for k in (1, 2, heads) if heads % k == 0])), layers=int(rng.integers(1, 3)),
                mrope_section=[int(cut[0]), int(cut[1] - cut[0]), int(half - cut[1])],
                window_size=int(rng.choice([56, 112])),
                full_layers=tuple(int(i) for i in range(depth) if rng.random() < 0.5),
                deepstack_layers=tuple(int(i) for i in range(depth) if rng.random() < 0.5),
                position_grid=int(rng.choice([4, 7])), seed=int(rng.integers(1000)))


@pytest.mark.parametrize("draw", range(3))
def test_random_configurations(tmp_path, draw):
    from vlmforge.export import export_model
    from vlmforge.export.tiny_qwen2_vl import make_tiny_qwen2_vl

    config = _random_config(np.random.default_rng(100 + draw))
    model_dir = make_tiny_qwen2_vl(tmp_path / "hf", **config)
    export_model(model_dir, tmp_path / "out")  # each graph checked against its torch module (atol 1e-4)
    pipe = Pipeline.load(tmp_path / "out")
    hf = _hf_models(model_dir, config["version"])
    images = _images([(50, 90)], seed=draw)
    text = pipe.turn_prompt("What is it?", 1)
    ours = pipe.generate(text, images=images, max_new_tokens=12, ignore_eos=True).token_ids
    assert ours == _hf_generate(hf, text, images)[:12], config


def _hf_models(model_dir, version: str):
    import transformers
    from transformers import AutoTokenizer
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    cls = {"2": transformers.Qwen2VLForConditionalGeneration, "2.5": transformers.Qwen2_5_VLForConditionalGeneration,
           "3": transformers.Qwen3VLForConditionalGeneration}[version]
    model = cls.from_pretrained(model_dir, attn_implementation="eager").eval()
    model.generation_config.eos_token_id = None
    return model, AutoTokenizer.from_pretrained(model_dir), Qwen2VLImageProcessorPil.from_pretrained(model_dir)


def _hf_generate_video(hf, text: str, images, frames, pipe, fps: float = 2.0, indices=None) -> list[int]:
    """transformers generate on the same prompt with pixel_values_videos from vlmforge's kernel (transformers'
    video processor needs torchvision, which is not importable here: the pixels are the kernel's, the model
    side — vision over temporal patches, M-RoPE with time steps — is transformers')."""
    import transformers

    from vlmforge.kernels.native import native_video

    model, tokenizer, processor = hf
    pixels, layout = native_video(frames, pipe.manifest.image.preprocess)
    grid = np.array([[layout.frames, *layout.grid]])
    kwargs = {}
    if images:
        px = processor(images=images, return_tensors="np")
        head, *rest = text.split("<|image_pad|>")
        text = head + "".join("<|image_pad|>" * int(g.prod() // 4) + r for g, r in zip(px["image_grid_thw"], rest))
        kwargs.update(pixel_values=torch.as_tensor(px["pixel_values"]), image_grid_thw=torch.as_tensor(px["image_grid_thw"]))
    head, rest = text.split("<|video_pad|>")
    if isinstance(model, transformers.Qwen3VLForConditionalGeneration):  # Qwen3VLProcessor.replace_video_token
        from transformers.models.qwen3_vl.processing_qwen3_vl import Qwen3VLProcessor

        indices = list(range(len(frames))) if indices is None else list(indices)  # which frames of the video
        stamps = Qwen3VLProcessor._calculate_timestamps(None, indices, fps, 2)
        per = "<|video_pad|>" * int(grid[0, 1:].prod() // 4)
        pads = "".join(f"<{t:.1f} seconds><|vision_start|>{per}<|vision_end|>" for t in stamps)
    else:
        pads = "<|video_pad|>" * int(grid.prod() // 4)
    ids = tokenizer(head + pads + rest, return_tensors="pt")["input_ids"]
    types = (ids == model.config.image_token_id).int() + 2 * (ids == model.config.video_token_id).int()
    kwargs.update(pixel_values_videos=torch.as_tensor(pixels), video_grid_thw=torch.as_tensor(grid), mm_token_type_ids=types)
    if pipe.manifest.llm.positions.tokens_per_second:
        kwargs["second_per_grid_ts"] = torch.tensor([pipe.manifest.image.preprocess.temporal_patch_size / fps])
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                             do_sample=False, **kwargs)
    return out[0, ids.shape[1]:].tolist()


def test_batched_requests_match_one_at_a_time(pipe):
    """Each row of a batch keeps its own M-RoPE positions (and Qwen3-VL's DeepStack inputs)."""
    from vlmforge.runtime.serving import Request

    frames = np.random.default_rng(4).integers(0, 256, (4, 40, 50, 3), dtype=np.uint8)
    reqs = [Request(pipe.turn_prompt("What is it?", 1), _images([(60, 80)]), max_new_tokens=6),
            Request(pipe.turn_prompt("Compare them.", 2), _images([(40, 50), (70, 30)], seed=1), max_new_tokens=9),
            Request(pipe.turn_prompt("What happens?", 0, num_videos=1), videos=[frames], max_new_tokens=5),
            Request(pipe.turn_prompt("Say hello.", 0), max_new_tokens=7)]
    for r in reqs:
        r.ignore_eos = True
    solo = [pipe.generate(**r.kwargs()).token_ids for r in reqs]
    assert [r.token_ids for r in pipe.generate_batch(reqs)] == solo
    assert pipe.engine.stats["max_rows"] > 1


@pytest.mark.parametrize("with_image", [False, True], ids=["video", "image-and-video"])
def test_video_tokens_match_transformers(pipe, hf, tmp_path, with_image):
    from PIL import Image

    frames = np.random.default_rng(3).integers(0, 256, (6, 40, 50, 3), dtype=np.uint8)
    images = _images([(60, 80)]) if with_image else []
    text = pipe.turn_prompt("What happens?", len(images), num_videos=1)
    ours = pipe.generate(text, images=images, videos=[frames], max_new_tokens=NEW_TOKENS, ignore_eos=True)
    assert ours.token_ids == _hf_generate_video(hf, text, images, frames, pipe)
    folder = tmp_path / "frames"  # the same video as a folder of frames: the same tokens
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:03d}.png")
    assert pipe.generate(text, images=images, videos=[folder], max_new_tokens=4, ignore_eos=True).token_ids == ours.token_ids[:4]


def test_bad_videos(pipe, tmp_path, tiny_llava):
    text = pipe.turn_prompt("What happens?", 0, num_videos=1)
    cases = [(np.zeros((0, 40, 40, 3), np.uint8), "no frames"), ([np.zeros((40, 40, 3), np.uint8),
              np.zeros((30, 40, 3), np.uint8)], "differ in size"), (tmp_path, "no frames")]
    for video, says in cases:
        with pytest.raises(ValueError, match=says):
            pipe.generate(text, videos=[video], max_new_tokens=1)
    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"not really a video")
    with pytest.raises(ValueError, match=r'vlmforge\[video\]|cannot decode'):
        pipe.generate(text, videos=[clip], max_new_tokens=1)
    with pytest.raises(PromptError, match="must be a positive number"):
        pipe.generate(text, videos=[np.zeros((2, 40, 40, 3), np.uint8)], max_new_tokens=1, video_fps=0)
    with pytest.raises(PromptError, match="0 video placeholder"):
        pipe.generate(pipe.turn_prompt("Hi", 0), videos=[np.zeros((2, 40, 40, 3), np.uint8)], max_new_tokens=1)
    llava = Pipeline.load(tiny_llava[1])
    with pytest.raises(PromptError, match="takes no videos"):
        llava.generate("USER: hi ASSISTANT:", videos=[np.zeros((2, 40, 40, 3), np.uint8)], max_new_tokens=1)


def _write_mp4(path, frames, fps: int = 2):
    import av

    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())


def test_a_video_file_decodes_through_pyav(pipe, tmp_path, monkeypatch):
    import sys

    from vlmforge.runtime.video import load_video

    clip = tmp_path / "clip.mp4"
    _write_mp4(clip, np.random.default_rng(8).integers(0, 256, (6, 48, 64, 3), dtype=np.uint8))
    frames = load_video(clip, 10**8)
    assert frames.shape == (6, 48, 64, 3)
    text = pipe.turn_prompt("What happens?", 0, num_videos=1)
    from_file = pipe.generate(text, videos=[clip], max_new_tokens=6, ignore_eos=True).token_ids
    assert from_file == pipe.generate(text, videos=[frames], max_new_tokens=6, ignore_eos=True).token_ids
    monkeypatch.setitem(sys.modules, "av", None)  # an install without the extra
    with pytest.raises(ValueError, match=r'pip install "vlmforge\[video\]"'):
        pipe.generate(text, videos=[clip], max_new_tokens=1)


def test_frame_sampling(pipe, hf):
    from vlmforge.runtime.video import sample_frames

    assert sample_frames(60, 30.0, 2.0, 2).tolist() == [0, 15, 30, 45]  # 2 s at 2 fps: 4 frames
    assert sample_frames(10, 30.0, 2.0, 2).tolist() == [0, 2, 5, 7]  # under a second: min_frames (4)
    assert len(sample_frames(3000, 30.0, 2.0, 2, max_frames=16)) == 16
    assert all(len(sample_frames(n, 24.0, 3.0, 2)) % 2 == 0 for n in range(4, 200, 7))
    frames = np.random.default_rng(4).integers(0, 256, (24, 40, 50, 3), dtype=np.uint8)
    text = pipe.turn_prompt("What happens?", 0, num_videos=1)
    sampled = pipe.generate(text, videos=[frames], video_fps=12.0, sample_fps=2.0, max_new_tokens=4, ignore_eos=True)
    indices = sample_frames(24, 12.0, 2.0, 2, rule=pipe.manifest.image.preprocess.frame_sampling)
    kept = frames[indices]
    if pipe.manifest.image.video_frame_template:  # Qwen3-VL: the prompt holds each temporal patch's timestamp
        assert sampled.token_ids == _hf_generate_video(hf, text, [], kept, pipe, fps=12.0, indices=indices)[:4]
    else:
        assert sampled.token_ids == pipe.generate(text, videos=[kept], video_fps=2.0, max_new_tokens=4,
                                                  ignore_eos=True).token_ids
    with pytest.raises(ValueError, match="too short|at least 2 frames"):
        pipe.generate(text, videos=[frames[:1]], sample_fps=2.0, max_new_tokens=1)


def test_qwen3_video_budget_and_sampling_match_its_video_processor():
    """Qwen3-VL's video processor bounds the clip (frames × pixels) and samples by linspace. Its module
    needs torchvision to import, but these two functions are pure: their source is run as it is."""
    from types import SimpleNamespace

    from transformers.video_utils import VideoMetadata

    ref = _qwen3_video_functions()

    from vlmforge.kernels.native import smart_resize
    from vlmforge.kernels.spec import PreprocessSpec
    from vlmforge.runtime.video import sample_frames

    spec = PreprocessSpec(scheme="native", resize="none", patch_size=16, merge_size=2, video_budget="clip",
                          video_min_pixels=128 * 32 * 32, video_max_pixels=32 * 32 * 768, frame_sampling="linspace")
    rng = np.random.default_rng(0)
    for _ in range(200):
        frames, h, w = int(rng.integers(2, 40)), int(rng.integers(8, 2000)), int(rng.integers(8, 2000))
        if max(h, w) / min(h, w) > 200:
            continue
        assert smart_resize(h, w, spec, video=True, frames=frames) == ref.smart_resize(
            frames, h, w, 2, 32, spec.video_min_pixels, spec.video_max_pixels), (frames, h, w)
    processor = SimpleNamespace(fps=2, min_frames=4, max_frames=768)
    for total, fps in [(60, 30.0), (10, 30.0), (3000, 24.0), (7, 2.0), (250, 29.97)]:
        expected = ref.sample_frames(processor, VideoMetadata(total_num_frames=total, fps=fps))
        assert sample_frames(total, fps, 2.0, 2, rule="linspace").tolist() == expected.tolist()


def _qwen3_video_functions():
    """``smart_resize`` and ``Qwen3VLVideoProcessor.sample_frames`` from transformers' own source file."""
    import ast
    import math
    from pathlib import Path
    from types import SimpleNamespace

    import transformers

    path = Path(transformers.__file__).parent / "models/qwen3_vl/video_processing_qwen3_vl.py"
    tree = ast.parse(path.read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Qwen3VLVideoProcessor")
    wanted = [n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "smart_resize"]
    wanted += [n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "sample_frames"]
    namespace = {"math": math, "np": np, "VideoMetadata": object, "logger": SimpleNamespace(warning_once=print)}
    exec(compile(ast.Module(body=wanted, type_ignores=[]), str(path), "exec"), namespace)
    return SimpleNamespace(smart_resize=namespace["smart_resize"], sample_frames=namespace["sample_frames"])


def test_qwen3_position_grid_taps_match_transformers():
    from transformers.vision_utils import get_vision_interpolation_indices_and_weights

    from vlmforge.kernels import vision_geometry
    from vlmforge.kernels.spec import PreprocessSpec, TileLayout

    spec = PreprocessSpec(scheme="native", resize="none", patch_size=16, merge_size=2, position_grid=48)
    for grid, frames in [((2, 2), 1), ((4, 6), 1), ((34, 60), 1), ((8, 4), 3), ((2, 96), 1)]:
        layout = TileLayout(frames * grid[0] * grid[1], (0, 0), 0, grid, frames)
        ours = vision_geometry(layout, spec)
        idx, weights = get_vision_interpolation_indices_and_weights(
            torch.tensor([[frames, *grid]]), 48, mode="bilinear", align_corners=True, spatial_merge_size=2)
        np.testing.assert_array_equal(ours["interp_indices"], idx.numpy())
        np.testing.assert_array_equal(ours["interp_weights"], weights.numpy())


def test_qwen3_needs_a_whole_temporal_patch(pipe):
    if not pipe.manifest.image.video_frame_template:
        pytest.skip("Qwen2/2.5-VL pad a one-frame video to a temporal patch")
    text = pipe.turn_prompt("What happens?", 0, num_videos=1)
    with pytest.raises(ValueError, match="at least 2 frames"):
        pipe.generate(text, videos=[np.zeros((1, 40, 40, 3), np.uint8)], max_new_tokens=1)
    with pytest.raises(PromptError, match="1 video placeholder"):
        pipe.generate(text, videos=[np.zeros((2, 40, 40, 3), np.uint8)] * 2, max_new_tokens=1)
