"""InternLM-XComposer2-VL (``internlm-xcomposer2-vl-7b``: one 490-px view, no HD) against its
original code, rebuilt on the oracle folder's modules (../shared/reference/internlm-xcomposer2, the
IXC-2.5 remote code: the same InternLM2 + PLoRA decoder, CLIPVisionTower, tokenizer).

What differs in IXC2-VL is reconstructed below from its published files, as copied (unchanged, in
the authors' layout) at github.com/OpenGVLab/LAMM commit 15eb22d4edd3fcc03bc83346476d25e6e7f5f940,
src/ChEF/models/internlm/ (build_mlp.py, modeling_internlm_xcomposer2.py; the hub's
internlm/internlm-xcomposer2-vl-7b files):

* build_mlp.py ``CLIPVisionTower.resize_pos``: the 24×24 table of openai/clip-vit-large-patch14-336
  resized bicubically (align_corners False) to 35×35 in __init__, before the checkpoint loads —
  here 3×3 → 5×5 on a tiny tower (42-px CLIP, 70-px view, 14-px patches);
* ``CLIPVisionTower.forward`` on a tensor: ``feature_select(vision_tower(images,
  output_hidden_states=True))`` = ``hidden_states[-1][:, 1:]``; ``build_vision_projector``:
  Linear(C, H), GELU, Linear(H, H) (no 4C merge); no ``plora_glb_GN`` / ``plora_sub_GN``;
* modeling ``vis_processor``: Resize((img_size, img_size), BICUBIC), ToTensor, CLIP Normalize;
  ``encode_img``: ``Image.open(path).convert('RGB')`` (or a ready tensor batch) → ``img2emb`` =
  ``vision_proj(vit(image))``; ``interleav_wrap_chat``: the turns after the meta instruction, split
  at ``<ImageHere>``, every non-empty part tokenised with ``tokenizer(part)`` (BOS each); ``chat``:
  the default meta_instruction, ``build_inputs`` (``<s>`` + the turns, tokenised with BOS) without
  a picture.

transformers 5's CLIP refuses a picture whose size differs from ``config.image_size``
(InternLM/InternLM-XComposer#461: the VL code runs on transformers 4.40, which had no such check),
so the oracle's resized embeddings also carry the view size; and transformers 5's CLIPVisionModel
has no ``vision_model`` level, so resize_pos reaches the embeddings directly — the two shims beyond
the harness's.
The oracle must import: a missing one fails here.
"""

from __future__ import annotations

import pathlib
import types

import numpy as np
import pytest
import torch

from ixc2_era import META, interleav_wrap_chat as vl_interleav_wrap_chat
from oracles import load_harness
from parity import assert_same_tokens

GRID, VIEW_GRID, PATCH = 3, 5, 14  # the hub CLIP's 24 → the VL's 35, in small
VIEW = VIEW_GRID * PATCH  # 70 px (the VL: 490)
TOWER = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=2,
             image_size=GRID * PATCH, patch_size=PATCH, projection_dim=128)  # 64-wide heads, as CLIP ViT-L
PLANTED = ("modeling_internlm_xcomposer2.py", "modeling_internlm2.py", "configuration_internlm_xcomposer2.py",
           "tokenization_internlm2.py", "build_mlp.py")
QUERY = "What is it?"
def oracle():
    return load_harness("internlm-xcomposer2")


# -- IXC2-VL's published code on the oracle's modules (tests only) ----------------------------------

def vl_resize_pos(self, orig_size=GRID, new_size=VIEW_GRID):
    """build_mlp.py CLIPVisionTower.resize_pos (24 → 35 there), the width read off the table."""
    # the VL: self.vision_tower.vision_model.embeddings (transformers 5's CLIPVisionModel dropped vision_model)
    embeddings = getattr(self.vision_tower, "vision_model", self.vision_tower).embeddings
    pos_embed_checkpoint = embeddings.position_embedding.weight.unsqueeze(0)
    embedding_size = pos_embed_checkpoint.shape[-1]
    new_num = new_size ** 2 + 1
    extra_tokens = pos_embed_checkpoint[:, :1]
    pos_tokens = pos_embed_checkpoint[:, 1:]
    pos_tokens = pos_tokens.reshape(-1, orig_size, orig_size, embedding_size).permute(0, 3, 1, 2)
    pos_tokens = torch.nn.functional.interpolate(pos_tokens, size=(new_size, new_size), mode='bicubic',
                                                 align_corners=False)
    pos_tokens = pos_tokens.permute(0, 2, 3, 1).flatten(1, 2)
    new_pos_embed = torch.cat((extra_tokens, pos_tokens), dim=1).squeeze(0)
    embeddings.position_embedding = torch.nn.Embedding(new_num, embedding_size)
    embeddings.position_embedding.weight = torch.nn.Parameter(new_pos_embed.to(pos_embed_checkpoint.dtype))
    embeddings.position_ids = torch.arange(new_num).expand((1, -1))
    embeddings.image_size = new_size * PATCH  # transformers 5's size check (module docstring)
    self.is_resize_pos = True


def vl_vit_forward(self, images):
    """build_mlp.py CLIPVisionTower.forward (the tensor branch)."""
    image_forward_outs = self.vision_tower(images.to(device=self.device, dtype=self.dtype), output_hidden_states=True)
    return self.feature_select(image_forward_outs).to(images.dtype)


def vl_encode_img(self, image):
    from PIL import Image

    if isinstance(image, str):
        image = Image.open(image).convert('RGB')
        image = self.vis_processor(image).unsqueeze(0).to(self.device)
    else:
        assert isinstance(image, torch.Tensor)
    return self.vision_proj(self.vit(image.to(self.device)))  # img2emb's img_embeds


def vl_chat_inputs(model, tokenizer, query, image):
    """chat()'s prompt with its default meta_instruction: (embeddings, im_mask, input_ids or None)."""
    meta = META
    if image is None:
        ids = model.build_inputs(tokenizer, query, [], meta)["input_ids"]
        return model.model.tok_embeddings(ids), torch.zeros(ids.shape, dtype=torch.bool), ids
    inputs, im_mask = model.interleav_wrap_chat(tokenizer, query, model.encode_img(image), [], meta)
    return inputs["inputs_embeds"], im_mask, None


def build_vl_oracle(seed: int, **overrides):
    """The harness's tiny model made an IXC2-VL: the tiny 42-px tower, the VL's projector and
    processor, no separators or video projector, then resize_pos and the VL's methods."""
    from transformers import CLIPVisionConfig

    h = oracle()
    saved = h._TINY_CLIP_CFG[0]
    h._TINY_CLIP_CFG[0] = CLIPVisionConfig(**TOWER)
    try:
        model, config, tok = h.build_tiny(seed, **overrides)
    finally:
        h._TINY_CLIP_CFG[0] = saved
    width, hidden = TOWER["hidden_size"], config.hidden_size
    del model.plora_glb_GN, model.plora_sub_GN, model.video_mem_proj
    model.vision_proj = torch.nn.Sequential(torch.nn.Linear(width, hidden), torch.nn.GELU(),
                                            torch.nn.Linear(hidden, hidden))
    h.env.init_weights_(model.vision_proj, seed + 1)
    t = h.mx.transforms
    model.vis_processor = t.Compose([t.Resize((VIEW, VIEW), interpolation=h.mx.InterpolationMode.BICUBIC),
                                     t.ToTensor(), t.Normalize((0.48145466, 0.4578275, 0.40821073),
                                                               (0.26862954, 0.26130258, 0.27577711))])
    vl_resize_pos(model.vit)
    model.vit.forward = types.MethodType(vl_vit_forward, model.vit)
    model.encode_img = types.MethodType(vl_encode_img, model)
    model.interleav_wrap_chat = types.MethodType(vl_interleav_wrap_chat, model)
    return model.eval(), config, tok


def drawn_config(seed: int) -> dict:
    """An LLM drawn at random (GQA / MHA / MQA, biases or not, 1-2 layers, two RoPE bases)."""
    draw = np.random.default_rng(seed)
    heads, kv = [(4, 2), (4, 4), (4, 1), (8, 2)][int(draw.integers(4))]
    return dict(num_hidden_layers=int(draw.choice([1, 2])), num_attention_heads=heads, num_key_value_heads=kv,
                hidden_size=int(draw.choice([64, 128])), intermediate_size=int(draw.choice([96, 160])),
                bias=bool(draw.integers(2)), rope_theta=float(draw.choice([10000.0, 1e6])))


# -- the export --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One export of a tiny VL checkpoint as it ships (no CLIP folder: the hub's tower config is
    read off the weights), an LLM drawn at random from a fixed seed."""
    import json

    from vlmforge.export import export_model
    from vlmforge.export.tiny_internlm_xcomposer2 import make_tiny_internlm_xcomposer2
    from vlmforge.runtime import Pipeline

    root = tmp_path_factory.mktemp("ixc2-vl")
    seed = int(np.random.default_rng(490).integers(1 << 16))
    model, config, tok = build_vl_oracle(seed, **drawn_config(seed))
    assert model.vit.vision_tower.embeddings.position_embedding.weight.shape[0] == VIEW_GRID ** 2 + 1
    model_dir = make_tiny_internlm_xcomposer2(root / "hf", model.state_dict(), tok.vocab_file, config.to_dict(), {},
                                              clip_folder=None)
    raw = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**raw, "img_size": VIEW}))  # the VL's config.json field
    for name in PLANTED:
        (model_dir / name).write_text(f"open({str(root / 'ran.txt')!r}, 'w').write('executed')\n")
    export_model(model_dir, root / "out")
    return Pipeline.load(root / "out"), model, tok, root


def user(*items):
    content = [{"type": "image"} if i is None else {"type": "text", "text": i} for i in items]
    return [{"role": "user", "content": content}]


def save(tmp_path: pathlib.Path, image: np.ndarray, name: str = "p.png") -> str:
    from PIL import Image

    Image.fromarray(image).save(tmp_path / name)
    return str(tmp_path / name)


def compare(tiny, messages, query, image, images, n: int = 24):
    pipe, model, tok, _ = tiny
    ours = pipe.generate(messages=messages, images=images, max_new_tokens=n, ignore_eos=True)
    with torch.no_grad():
        embeds, mask, _ = vl_chat_inputs(model, tok, query, image)
    theirs = oracle().greedy(model, {"inputs_embeds": embeds, "im_mask": mask}, n)
    assert_same_tokens(ours.token_ids, theirs, n, set())
    return ours


def test_greedy_tokens_equal_the_original_on_three_shapes(tiny, tmp_path):
    """A wide, a tall and a square picture (each resized to the 70² view), where the query's
    ``<ImageHere>`` stands: 24 greedy tokens identical, 25 image tokens each."""
    h = oracle()
    for i, (w, hgt) in enumerate([(150, 60), (50, 130), (90, 90)]):
        image = h.picture(20 + i, w, hgt)
        ours = compare(tiny, user(None, QUERY), "<ImageHere>" + QUERY, save(tmp_path, image), [image])
        assert ours.stats.num_image_tokens == VIEW_GRID ** 2


def test_two_pictures_and_text_only(tiny, tmp_path):
    """Two pictures (chat's tensor branch: a batch of vis_processor outputs) where their
    placeholders stand, and a prompt without one (build_inputs: ``<s>`` after BOS)."""
    pipe, model, _, _ = tiny
    from PIL import Image

    images = [oracle().picture(31 + i, w, hgt) for i, (w, hgt) in enumerate([(120, 80), (60, 100)])]
    batch = torch.stack([model.vis_processor(Image.fromarray(a)) for a in images])
    compare(tiny, user("left ", None, ", right ", None, ". Which is larger?"),
            "left <ImageHere>, right <ImageHere>. Which is larger?", batch, images)
    ours = compare(tiny, [{"role": "user", "content": "Tell me a story about a cat."}],
                   "Tell me a story about a cat.", None, [])
    assert ours.stats.num_image_tokens == 0


def test_prompt_ids_are_the_originals(tiny):
    """Text only: build_inputs' ids exactly (BOS, then ``<s>`` and the system turn); two pictures:
    interleav_wrap_chat's parts, each tokenised with its BOS, the slots between them."""
    pipe, model, tok, _ = tiny
    _, _, ids = vl_chat_inputs(model, tok, QUERY, None)
    prepared = pipe.prepare_prompt(None, [{"role": "user", "content": QUERY}], 0, [])
    assert prepared.input_ids.tolist() == ids[0].tolist()
    assert ids[0, :2].tolist() == [tok.bos_token_id] * 2
    query = "left <ImageHere>, right <ImageHere>. Which is larger?"
    prompt = f"[UNUSED_TOKEN_146]system\n{META}[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]user\n{query}" \
             "[UNUSED_TOKEN_145]\n[UNUSED_TOKEN_146]assistant\n"
    slot, n = pipe.manifest.image.image_token_id, VIEW_GRID ** 2
    parts = [tok(part).input_ids for part in prompt.split("<ImageHere>")]
    expected = parts[0] + [slot] * n + parts[1] + [slot] * n + parts[2]
    prepared = pipe.prepare_prompt(None, user("left ", None, ", right ", None, ". Which is larger?"), 2, [n, n])
    assert prepared.input_ids.tolist() == expected


# -- each graph against the original's modules -------------------------------------------------------

def session(pipe, name):
    import onnxruntime as ort

    return ort.InferenceSession(str(pipe.root / pipe.manifest.graphs[name].path), providers=["CPUExecutionProvider"])


def test_vision_and_connector_graphs_equal_the_originals(tiny, tmp_path):
    """Kernel pixels == vis_processor's; vision graph == vit (hidden_states[-1][:, 1:]); connector
    graph == vision_proj; the whole image path == encode_img on the file; each within 1e-4."""
    from PIL import Image

    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime.stats import StageTimer

    pipe, model, _, _ = tiny
    image = oracle().picture(41, 130, 70)
    path = save(tmp_path, image)
    pixels, layout = tile_and_patchify(image, pipe.manifest.image.preprocess)
    ref_pixels = model.vis_processor(Image.open(path).convert("RGB")).unsqueeze(0)
    assert pixels.shape == (1, 3, VIEW, VIEW) and layout.num_image_tokens == VIEW_GRID ** 2
    np.testing.assert_allclose(pixels, ref_pixels.numpy(), atol=1e-6, rtol=0)
    with torch.no_grad():
        features = model.vit(ref_pixels)
        embeds = model.vision_proj(features)
        ref = model.encode_img(path)
    ours_features = session(pipe, "vision").run(None, {"pixel_values": ref_pixels.numpy()})[0]
    np.testing.assert_allclose(ours_features, features.numpy(), atol=1e-4, rtol=0)
    ours_embeds = session(pipe, "connector").run(None, {"image_features": features.numpy()})[0]
    np.testing.assert_allclose(ours_embeds, embeds.numpy(), atol=1e-4, rtol=0)
    ours = pipe.encode_image(image, StageTimer())
    assert ours.shape == ref[0].shape
    np.testing.assert_allclose(ours, ref[0].numpy(), atol=1e-4, rtol=0)


def test_llm_graph_equals_the_original_decoder(tiny):
    """Prefill with a mixed image mask, then a step on that cache: logits within 1e-4."""
    from test_internlm_xcomposer2 import llm_session, run_llm

    pipe, model, _, _ = tiny
    s = llm_session(pipe)
    embeds = torch.randn(1, 9, model.config.hidden_size, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[0, 1, 1, 1, 1, 0, 0, 1, 0]], dtype=torch.bool)
    ours, presents = run_llm(s, pipe, embeds[:, :7].numpy(), mask[:, :7].float().numpy(), 0, None)
    with torch.no_grad():
        out = model(inputs_embeds=embeds[:, :7], im_mask=mask[:, :7], use_cache=True)
        step = model(inputs_embeds=embeds[:, 7:], im_mask=mask[:, 7:], past_key_values=out.past_key_values,
                     use_cache=True)
    np.testing.assert_allclose(ours, out.logits[0, -1].numpy(), atol=1e-4, rtol=0)
    # keys / values reach |30| here (x3 wqkv gain): float32 rounding alone moves the oracle's layer-2
    # cache by 1.7e-4 (6e-6 of its scale) from its own float64 run; the cache is held to 2e-5 of its scale
    for i, (k, v) in enumerate(out.past_key_values):
        for j, ref in ((2 * i, k.numpy()), (2 * i + 1, v.numpy())):
            np.testing.assert_allclose(presents[j], ref, atol=2e-5 * np.abs(ref).max(), rtol=0)
    ours, _ = run_llm(s, pipe, embeds[:, 7:].numpy(), mask[:, 7:].float().numpy(), 7, presents)
    np.testing.assert_allclose(ours, step.logits[0, -1].numpy(), atol=1e-4, rtol=0)


# -- the manifest, the checkpoint's Python, bad checkpoints ------------------------------------------

def test_manifest_and_the_checkpoints_python_never_runs(tiny):
    pipe, model, _, root = tiny
    spec = pipe.manifest.image.preprocess
    assert (spec.scheme, spec.resize, spec.size, spec.resample) == ("fixed", "exact", [VIEW, VIEW], "bicubic")
    assert not pipe.manifest.capabilities.image_newline and pipe.manifest.image.newline_path is None
    assert "plora_sub_GN" not in model.state_dict()
    assert all((root / "hf" / name).is_file() for name in PLANTED) and not (root / "ran.txt").exists()


def test_bad_vl_checkpoints_are_refused_clearly(tiny, tmp_path):
    import json
    import shutil

    from safetensors.torch import load_file, save_file

    from vlmforge.export import export_model

    _, _, _, root = tiny
    model_dir = tmp_path / "hf"
    shutil.copytree(root / "hf", model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    (model_dir / "config.json").write_text(json.dumps({**config, "img_size": 56}))
    with pytest.raises(ValueError, match="img_size 56 .* 70-px"):
        export_model(model_dir, tmp_path / "a")
    (model_dir / "config.json").write_text(json.dumps(config))
    weights = load_file(str(model_dir / "model.safetensors"))
    key = "vit.vision_tower.vision_model.embeddings.position_embedding.weight"
    save_file({**weights, key: weights[key][:-1].contiguous()}, str(model_dir / "model.safetensors"))
    with pytest.raises(ValueError, match="not a square grid plus CLS"):
        export_model(model_dir, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
