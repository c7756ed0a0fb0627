"""InternLM-XComposer2 (IXC-2.5 lineage, 4KHD-style HD tiling): our implementation against the
authors' remote code (../shared/reference/internlm-xcomposer2), run as the oracle on tiny random
checkpoints in the original layout.

The oracle must import: a missing one fails here (it is the only reference this family has)."""

from __future__ import annotations

import json
import pathlib
import shutil

import numpy as np
import pytest
import torch

from oracles import load_harness
from parity import assert_same_tokens, user

QUERY = "What is it?"
PLANTED = ("modeling_internlm_xcomposer2.py", "modeling_internlm2.py", "configuration_internlm_xcomposer2.py",
           "tokenization_internlm2.py", "build_mlp.py", "ixc_utils.py")


def oracle():
    """The original code's harness (tests/oracles.py): a missing one fails the test, never skips."""
    return load_harness("internlm-xcomposer2")


def plant(model_dir: pathlib.Path, marker: pathlib.Path) -> None:
    """The checkpoint's remote-code files, each writing ``marker`` if anything ever runs it."""
    for name in PLANTED:
        (model_dir / name).write_text(f"open({str(marker)!r}, 'w').write('executed')\n")


def drawn_config(seed: int) -> dict:
    """An LLM configuration drawn at random (GQA / MHA / MQA, with or without biases, 1-2 layers …);
    the CLIP tower is the harness's (560-px tiles are hard-coded upstream)."""
    draw = np.random.default_rng(seed)
    heads, kv = [(4, 2), (4, 4), (4, 1), (2, 1), (8, 2)][int(draw.integers(5))]
    return dict(num_hidden_layers=int(draw.choice([1, 2])), num_attention_heads=heads, num_key_value_heads=kv,
                hidden_size=int(draw.choice([64, 96, 128])), intermediate_size=int(draw.choice([96, 128, 160])),
                bias=bool(draw.integers(2)), rope_theta=float(draw.choice([10000.0, 1e6])))


def build(root: pathlib.Path, seed: int, **overrides):
    """(our pipeline, the oracle model, the checkpoint folder): the oracle's weights and tokenizer
    saved in the original layout (with its remote code planted), exported by us."""
    from vlmforge.export import export_model
    from vlmforge.export.tiny_internlm_xcomposer2 import make_tiny_internlm_xcomposer2
    from vlmforge.runtime import Pipeline

    h = oracle()
    model, config, tok = h.build_tiny(seed, **overrides)
    model_dir = make_tiny_internlm_xcomposer2(root / "hf", model.state_dict(), tok.vocab_file, config.to_dict(),
                                              h.TINY_CLIP, hd_num=h.HD_NUM)
    plant(model_dir, root / "ran.txt")
    export_model(model_dir, root / "out")
    return Pipeline.load(root / "out"), model, model_dir


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """One export (each takes ~13 s, so every test shares it) of a configuration drawn at random
    from a fixed seed: reproducible, and a different point of the space than the harness's own."""
    seed = int(np.random.default_rng(1234).integers(1 << 16))
    return build(tmp_path_factory.mktemp("ixc2"), seed, **drawn_config(seed))


def theirs(model, tmp_path, images, query: str, n: int = 24) -> list[int]:
    """The original's greedy tokens: interleav_wrap_chat on the pictures saved as PNG files (it
    reads files), then KV-cache decoding with the mask all False."""
    from PIL import Image

    paths = []
    for i, image in enumerate(images):
        paths.append(str(tmp_path / f"picture-{i}.png"))
        Image.fromarray(image).save(paths[-1])
    with torch.no_grad():
        wrapped, im_mask, _ = model.interleav_wrap_chat(query, paths, hd_num=oracle().HD_NUM)
    return oracle().greedy(model, {"inputs_embeds": wrapped["inputs_embeds"], "im_mask": im_mask}, n)


def compare(pipe, model, tmp_path, images, messages, query: str, n: int = 24):
    """Our greedy tokens equal the original's, all ``n`` (ours do not stop at its end tokens either)."""
    ours = pipe.generate(messages=messages, images=images, max_new_tokens=n, ignore_eos=True)
    assert_same_tokens(ours.token_ids, theirs(model, tmp_path, images, query, n), n, set())
    return ours


def pictures(seed: int, sizes):
    h = oracle()
    return [h.picture(seed + i, w, hgt) for i, (w, hgt) in enumerate(sizes)]  # (width, height) each


# -- generation against the original ---------------------------------------------------------------

def test_greedy_tokens_equal_the_original_on_three_shapes(tiny, tmp_path):
    """The harness's wide and tall variants (1×2 tiles with padding below; the transpose branch, 2×1)
    and a 2×2 grid; the lone picture goes in front of the turn, as the original auto-places it."""
    pipe, model, _ = tiny
    h = oracle()
    inputs = h.make_inputs(model, None, seed=3)  # the "wide" variant: 600×250
    ours = pipe.generate(messages=user(None, QUERY), images=[inputs["image"]], max_new_tokens=24, ignore_eos=True)
    assert_same_tokens(ours.token_ids, h.greedy(model, inputs, 24), 24, set())
    assert ours.stats.num_image_tokens == (2 + 1) * 400 + 1 + 2 * 20 == inputs["im_mask"].sum()
    for size, tokens in (((250, 600), (2 + 1) * 400 + 1 + 3 * 20), ((800, 700), (4 + 1) * 400 + 1 + 3 * 20)):
        ours = compare(pipe, model, tmp_path, pictures(5, [size]), user(None, QUERY), QUERY)
        assert ours.stats.num_image_tokens == tokens, size


def test_two_pictures_and_text_only(tiny, tmp_path):
    """Two pictures stand where their placeholders are, each tiled with hd_num 6 (the original's
    rule for several) — the 2300×200 one gets 5 tiles, not config.json's 4 — and text alone."""
    pipe, model, _ = tiny
    images = pictures(7, [(300, 200), (2300, 200)])
    query = "<ImageHere>left, <ImageHere>right. Which is larger?"
    ours = compare(pipe, model, tmp_path, images, user(None, "left, ", None, "right. Which is larger?"), query)
    assert ours.stats.image_tokens == [2 * 400 + 1 + 2 * 20, 6 * 400 + 1 + 2 * 20]
    compare(pipe, model, tmp_path, [], [{"role": "user", "content": "Tell me a story about a cat."}],
            "Tell me a story about a cat.")


def test_prompt_ids_are_the_originals(tiny):
    """BOS, the image, then the turn as interleav_wrap_chat tokenises it (the harness's own ids)."""
    pipe, model, _ = tiny
    h = oracle()
    inputs = h.make_inputs(model, None, seed=0)
    n = int(inputs["im_mask"].sum())
    prepared = pipe.prepare_prompt(None, user(None, QUERY), 1, [n])
    before, after = inputs["ids_before_image"][0].tolist(), inputs["ids_after_image"][0].tolist()
    assert prepared.input_ids.tolist() == before + [pipe.manifest.image.image_token_id] * n + after
    assert prepared.image_slots == [(len(before), n)]


def test_batched_rows_equal_solo_runs(tiny):
    """The engine prefills in 256-token chunks (the mask sliced along the sequence) and stacks the
    decode steps' zero masks along the batch."""
    from vlmforge.runtime.serving import Request

    pipe, _, _ = tiny
    images = pictures(11, [(400, 300)])
    reqs = [Request(messages=user(None, QUERY), images=images, max_new_tokens=8, ignore_eos=True),
            Request(messages=user("Hello"), max_new_tokens=8, ignore_eos=True)]
    solo = [pipe.generate(**r.kwargs()).token_ids for r in reqs]
    assert [r.token_ids for r in pipe.generate_batch(reqs)] == solo


# -- each graph against the original's modules ------------------------------------------------------

def test_image_embeddings_equal_the_originals(tiny, tmp_path):
    """Kernel pixels → vision → connector → HD packing (newlines, separator) == the original's
    encode_img on the same picture file, within 1e-4."""
    from PIL import Image

    from vlmforge.runtime.stats import StageTimer

    pipe, model, _ = tiny
    image = pictures(2, [(700, 300)])[0]
    path = tmp_path / "p.png"
    Image.fromarray(image).save(path)
    ours = pipe.encode_image(image, StageTimer())
    with torch.no_grad():
        ref = model.encode_img(str(path), oracle().HD_NUM)[0].numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)


def llm_session(pipe):
    import onnxruntime as ort

    return ort.InferenceSession(str(pipe.root / pipe.manifest.graphs["llm"].path), providers=["CPUExecutionProvider"])


def run_llm(session, pipe, embeds, mask, start: int, past):
    """Our llm graph on (1, s, d) embeddings from position ``start`` with ``past`` → (logits, presents)."""
    s = embeds.shape[1]
    llm = pipe.manifest.llm
    past = past or [np.zeros((1, llm.num_kv_heads, 0, llm.head_dim), np.float32)] * (2 * llm.num_layers)
    feeds = {"inputs_embeds": embeds, "attention_mask": np.ones((1, start + s), np.int64),
             "position_ids": np.arange(start, start + s, dtype=np.int64)[None], "image_mask": mask}
    names = [i.name for i in session.get_inputs() if i.name.startswith("past")]
    out = session.run(None, {**feeds, **dict(zip(names, past))})
    return out[0][0, -1], out[1:]


def test_llm_graph_equals_the_original_decoder(tiny):
    """Prefill with a mixed image mask, then a step on that cache: logits and cached keys / values
    within 1e-4 of the original InternLM2 + PLoRA."""
    pipe, model, _ = tiny
    session = llm_session(pipe)
    g = torch.Generator().manual_seed(0)
    embeds = torch.randn(1, 9, model.config.hidden_size, generator=g)
    mask = torch.tensor([[0, 1, 1, 1, 1, 0, 0, 1, 0]], dtype=torch.bool)
    ours, presents = run_llm(session, pipe, embeds[:, :7].numpy(), mask[:, :7].float().numpy(), 0, None)
    with torch.no_grad():
        out = model(inputs_embeds=embeds[:, :7], im_mask=mask[:, :7], use_cache=True)
    np.testing.assert_allclose(ours, out.logits[0, -1].numpy(), atol=1e-4, rtol=0)
    for i, (k, v) in enumerate(out.past_key_values):
        np.testing.assert_allclose(presents[2 * i], k.numpy(), atol=1e-4, rtol=0)
        np.testing.assert_allclose(presents[2 * i + 1], v.numpy(), atol=1e-4, rtol=0)
    ours, _ = run_llm(session, pipe, embeds[:, 7:].numpy(), mask[:, 7:].float().numpy(), 7, presents)
    with torch.no_grad():
        step = model(inputs_embeds=embeds[:, 7:], im_mask=mask[:, 7:], past_key_values=out.past_key_values,
                     use_cache=True)
    np.testing.assert_allclose(ours, step.logits[0, -1].numpy(), atol=1e-4, rtol=0)


@pytest.mark.parametrize("overrides", [
    drawn_config(1), drawn_config(4),
    dict(num_key_value_heads=4, rope_scaling={"type": "linear", "factor": 2.0}),  # MHA, positions / 2
    dict(num_hidden_layers=1, bias=False, rope_scaling={"type": "dynamic", "factor": 2.0}),  # plain below 2048
], ids=["drawn-1", "drawn-4", "mha-linear", "dynamic"])
def test_decoder_equals_the_original_on_more_configurations(overrides):
    """Our decoder module (what the llm graph is exported from, checked against it at export) on
    the original's weights, prefill and a cached step, for configurations beyond the export's."""
    from vlmforge.export.families.internlm_xcomposer2 import build_decoder
    from vlmforge.export.families.internlm_xcomposer2.config import parse_config
    from vlmforge.export.tiny_internlm_xcomposer2 import tiny_config

    model, config, _ = oracle().build_tiny(3, **overrides)
    decoder, _ = build_decoder(model.state_dict(), parse_config(tiny_config(config.to_dict())))
    embeds = torch.randn(1, 9, config.hidden_size, generator=torch.Generator().manual_seed(2))
    mask = torch.tensor([[0, 1, 1, 1, 0, 0, 1, 1, 0]], dtype=torch.bool)
    empty = [torch.zeros(1, config.num_key_value_heads, 0, config.hidden_size // config.num_attention_heads)] * (
        2 * config.num_hidden_layers)
    with torch.no_grad():
        ours = decoder(embeds[:, :7], torch.ones(1, 7, dtype=torch.int64), torch.arange(7)[None], mask[:, :7].float(),
                       *empty)
        out = model(inputs_embeds=embeds[:, :7], im_mask=mask[:, :7], use_cache=True)
        np.testing.assert_allclose(ours[0][0, -1].numpy(), out.logits[0, -1].numpy(), atol=1e-4, rtol=0)
        ours = decoder(embeds[:, 7:], torch.ones(1, 9, dtype=torch.int64), torch.arange(7, 9)[None],
                       mask[:, 7:].float(), *ours[1:])
        step = model(inputs_embeds=embeds[:, 7:], im_mask=mask[:, 7:], past_key_values=out.past_key_values,
                     use_cache=True)
    np.testing.assert_allclose(ours[0][0, -1].numpy(), step.logits[0, -1].numpy(), atol=1e-4, rtol=0)


def plain_internlm2(model):
    """A transformers Llama with the original's weights minus every LoRA branch: wqkv's interleaved
    (kv heads, groups + 2, head_dim) rows split into q / k / v, w1 / w3 / w2 as gate / up / down."""
    from transformers import LlamaConfig, LlamaForCausalLM

    c = model.config
    kv, hd = c.num_key_value_heads, c.hidden_size // c.num_attention_heads
    g = c.num_attention_heads // kv
    llama = LlamaForCausalLM(LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.hidden_size, intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_hidden_layers, num_attention_heads=c.num_attention_heads, num_key_value_heads=kv,
        rms_norm_eps=c.rms_norm_eps, rope_theta=c.rope_theta, attention_bias=c.bias, mlp_bias=False,
        max_position_embeddings=c.max_position_embeddings, attn_implementation="eager")).eval()
    sd = model.state_dict()
    new = {"model.norm.weight": sd["model.norm.weight"], "lm_head.weight": sd["output.weight"],
           "model.embed_tokens.weight": sd["model.tok_embeddings.weight"]}
    for i in range(c.num_hidden_layers):
        src, dst = f"model.layers.{i}.", f"model.layers.{i}."
        for kind in ("weight", "bias") if c.bias else ("weight",):
            qkv = sd[f"{src}attention.wqkv.{kind}"].reshape(kv, g + 2, hd, -1)
            new[f"{dst}self_attn.q_proj.{kind}"] = qkv[:, :g].reshape(kv * g * hd, -1).squeeze(-1)
            new[f"{dst}self_attn.k_proj.{kind}"] = qkv[:, g].reshape(kv * hd, -1).squeeze(-1)
            new[f"{dst}self_attn.v_proj.{kind}"] = qkv[:, g + 1].reshape(kv * hd, -1).squeeze(-1)
            new[f"{dst}self_attn.o_proj.{kind}"] = sd[f"{src}attention.wo.{kind}"]
        for ours, theirs_ in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
            new[f"{dst}mlp.{theirs_}.weight"] = sd[f"{src}feed_forward.{ours}.weight"]
        new[f"{dst}input_layernorm.weight"] = sd[f"{src}attention_norm.weight"]
        new[f"{dst}post_attention_layernorm.weight"] = sd[f"{src}ffn_norm.weight"]
    llama.load_state_dict(new, strict=True)
    return llama


def test_the_lora_touches_image_tokens_only(tiny):
    """With the image mask zeroed our llm graph is a plain InternLM2 (a Llama with the weights
    rearranged, LoRA dropped); with it set the LoRA branches change the logits."""
    pipe, model, _ = tiny
    session = llm_session(pipe)
    embeds = torch.randn(1, 6, model.config.hidden_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        plain = plain_internlm2(model)(inputs_embeds=embeds).logits[0, -1].numpy()
    off, _ = run_llm(session, pipe, embeds.numpy(), np.zeros((1, 6), np.float32), 0, None)
    on, _ = run_llm(session, pipe, embeds.numpy(), np.ones((1, 6), np.float32), 0, None)
    np.testing.assert_allclose(off, plain, atol=1e-4, rtol=0)
    assert np.abs(on - plain).max() > 1e-2


# -- HD tiling and packing against the original's own functions -------------------------------------

class RecordingTower(torch.nn.Module):
    """Stands in for CLIPVisionModel inside the original's CLIPVisionTower: keeps the tiles it is
    given and answers seeded random features, so the original's packing runs at any picture size."""

    def __init__(self, width: int):
        super().__init__()
        self.width, self.tiles = width, None

    device, dtype = torch.device("cpu"), torch.float32  # what the original reads off its tower

    def forward(self, tiles, output_hidden_states=True):
        from types import SimpleNamespace

        self.tiles = tiles.clone()
        g = torch.Generator().manual_seed(tiles.shape[0])
        self.features = torch.randn(tiles.shape[0], 1601, self.width, generator=g)
        return SimpleNamespace(hidden_states=[self.features])


@pytest.mark.parametrize("size", [(3840, 1600), (1600, 3840), (600, 250), (300, 200), (5000, 500)])
def test_tiling_and_packing_follow_the_original(tiny, size):
    """Image_transform (scale search capped at ceil(width/560), white padding below, transpose for
    tall pictures) → vis_processor → the tower's global view and tiles == our kernel's pixels; the
    tower's token order (2×2 merge, sub_GN after every row, glb_GN between the views) == ours."""
    import dataclasses

    from PIL import Image

    from vlmforge.export.families.internlm_xcomposer2.vision import merge_2x2
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.kernels.hd import pack_hd_features

    pipe, model, _ = tiny
    h = oracle()
    spec = dataclasses.replace(pipe.manifest.image.preprocess, max_tiles=24)  # chat()'s default hd_num
    image = h.picture(9, *size)
    padded = h.mx.Image_transform(Image.fromarray(image), hd_num=24)
    tower = h.build_mlp.CLIPVisionTower.__new__(h.build_mlp.CLIPVisionTower)
    torch.nn.Module.__init__(tower)
    tower.vision_tower, tower.is_loaded, tower.select_layer, tower.select_feature = RecordingTower(8), True, -1, "patch"
    g = torch.Generator().manual_seed(1)
    glb_gn, sub_gn = torch.randn(1, 1, 32, generator=g), torch.randn(1, 1, 1, 32, generator=g)
    with torch.no_grad():
        packed, lengths = tower([model.vis_processor(padded).unsqueeze(0)], glb_gn, sub_gn)
    pixels, layout = tile_and_patchify(image, spec)
    ref = tower.vision_tower.tiles.numpy()
    assert pixels.shape == ref.shape and layout.grid == (padded.height // 560, padded.width // 560)
    np.testing.assert_allclose(pixels[1:], ref[1:], atol=1e-6, rtol=0)
    np.testing.assert_allclose(pixels[0], ref[0], atol=1e-5, rtol=0)
    merged = merge_2x2(tower.vision_tower.features[:, 1:], 40).numpy()
    ours = pack_hd_features(merged, layout.grid, spec, sub_gn.reshape(-1).numpy(), glb_gn.reshape(-1).numpy())
    np.testing.assert_array_equal(ours, packed[0].numpy())
    assert ours.shape[0] == layout.num_image_tokens == lengths[0]


# -- the tokenizer ---------------------------------------------------------------------------------

def random_strings(rng, count: int) -> list[str]:
    # no combining marks: tokenizers' Precompiled normaliser rewrites a whole grapheme by its first
    # charsmap prefix, where sentencepiece takes the longest match (export/…/tokenizer.py)
    alphabet = list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789.,;:!?'\"()[]{}<>/\\|-_=+*&^%$#@~`\n\t\r") + \
        list("éèçàüöß猫图片你好世界😀🐱✨—“”…\u3000\u00a0ﬁ①Ⅻ") + \
        ["'s", "  ", "\n\n", "▁", "<s>", "</s>", "<unk>", "[UNUSED_TOKEN_146]", "[UNUSED_TOKEN_145]", "user", " the"]
    return ["".join(str(rng.choice(alphabet)) for _ in range(int(rng.integers(0, 40)))) for _ in range(count)]


def test_converted_tokenizer_equals_the_original(tiny, rng):
    from tokenizers import Tokenizer

    pipe, model, _ = tiny
    ours = Tokenizer.from_file(str(pipe.root / pipe.manifest.tokenizer.path))
    original = model.tokenizer  # InternLM2Tokenizer over sentencepiece
    for text in random_strings(rng, 1500):
        assert ours.encode(text, add_special_tokens=False).ids == original(text, add_special_tokens=False).input_ids, \
            repr(text)
        assert ours.encode(text).ids == original(text).input_ids, repr(text)  # BOS first
    # the image slots' id: one past the vocabulary, only from the placeholder
    assert ours.encode("a<ImageHere>b", add_special_tokens=False).ids[1] == pipe.manifest.image.image_token_id == 400


# -- the checkpoint's Python never runs; bad checkpoints get clear errors --------------------------

def test_the_checkpoints_python_never_runs(tiny):
    pipe, _, model_dir = tiny
    assert all((model_dir / name).is_file() for name in PLANTED)  # planted before the export
    pipe.generate(messages=user(None, "hi"), images=pictures(1, [(90, 60)]), max_new_tokens=2)
    assert not (model_dir.parent / "ran.txt").exists()


def refused(model_dir, out, match):
    from vlmforge.export import export_model

    with pytest.raises(ValueError, match=match):
        export_model(model_dir, out)
    assert not out.exists()


def test_bad_checkpoints_are_refused_clearly(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    from vlmforge.export.families import resolve

    _, _, source = tiny
    model_dir = tmp_path / "hf"
    shutil.copytree(source, model_dir)
    config = json.loads((model_dir / "config.json").read_text())
    assert resolve({"model_type": "internlm2"}).__name__.endswith("internlm_xcomposer2")

    (model_dir / "config.json").write_text(json.dumps({**config, "architectures": ["InternLM2ForCausalLM"]}))
    refused(model_dir, tmp_path / "a", "plain InternLM2 LLM has no vision tower")
    (model_dir / "config.json").write_text(json.dumps({**config, "num_attention_heads": 7}))
    refused(model_dir, tmp_path / "b", f"hidden_size {config['hidden_size']} must be a multiple of num_attention_heads 7")
    (model_dir / "config.json").write_text(json.dumps(config))

    clip = json.loads((model_dir / "IXC2d5_clip_l_560" / "config.json").read_text())
    (model_dir / "IXC2d5_clip_l_560" / "config.json").write_text(json.dumps({**clip, "image_size": 490}))
    refused(model_dir, tmp_path / "c", "IXC2-VL \\(490 px, no tiling\\)")
    (model_dir / "IXC2d5_clip_l_560" / "config.json").write_text(json.dumps(clip))

    weights = load_file(str(model_dir / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if k != "model.layers.1.feed_forward.w2.Plora_B.weight"},
              str(model_dir / "model.safetensors"))
    refused(model_dir, tmp_path / "d", r"missing \['model.layers.1.feed_forward.w2.Plora_B.weight'\]")
    save_file({k: v for k, v in weights.items() if "Plora" not in k}, str(model_dir / "model.safetensors"))
    refused(model_dir, tmp_path / "e", "Partial-LoRA weights in every projection")
    save_file(weights, str(model_dir / "model.safetensors"))

    (model_dir / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    refused(model_dir, tmp_path / "f", "is not a SentencePiece model")


# -- IXC2-4KHD: 336-px tiles, centred padding, no scale cap (tests/ixc2_4khd.py re-parametrises the oracle) --

class RecordingTower336(RecordingTower):
    def forward(self, tiles, output_hidden_states=True):
        from types import SimpleNamespace

        self.tiles = tiles.clone()
        self.features = torch.randn(tiles.shape[0], 577, self.width, generator=torch.Generator().manual_seed(5))
        return SimpleNamespace(hidden_states=[self.features])


@pytest.fixture(scope="module")
def tiny_4khd(tmp_path_factory):
    """A 4KHD checkpoint as it ships (no CLIP folder: the 336-px tower's config is read off the
    weights), an LLM drawn at random, hd_num 4 in config.json to keep the prompts short."""
    import ixc2_4khd

    from vlmforge.export import export_model
    from vlmforge.export.tiny_internlm_xcomposer2 import make_tiny_internlm_xcomposer2
    from vlmforge.runtime import Pipeline

    h, root = oracle(), tmp_path_factory.mktemp("ixc2-4khd")
    seed = int(np.random.default_rng(4336).integers(1 << 16))
    draw = {**drawn_config(seed), "num_hidden_layers": 1}
    model, config, tok = ixc2_4khd.build_tiny_4khd(h, seed, ixc2_4khd.tower_336(h, 64), **draw)
    model_dir = make_tiny_internlm_xcomposer2(root / "hf", model.state_dict(), tok.vocab_file, config.to_dict(),
                                              {}, hd_num=4, clip_folder=None)
    plant(model_dir, root / "ran.txt")
    export_model(model_dir, root / "out")
    assert not (root / "ran.txt").exists()
    return Pipeline.load(root / "out"), model


@pytest.mark.parametrize("size", [(3840, 1600), (1600, 3840), (600, 250), (300, 700)])
def test_4khd_tiling_and_packing_follow_the_original(tiny_4khd, size):
    """4KHD's HD_transform at chat()'s hd_num 25 (a small picture is enlarged; padding centred:
    above and below, or left and right of a tall one) → the tower's views == our kernel's pixels;
    its token order (12×12 per tile, sub_GN per row, glb_GN between the views) == ours."""
    import dataclasses

    import ixc2_4khd
    from PIL import Image

    from vlmforge.export.families.internlm_xcomposer2.vision import merge_2x2
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.kernels.hd import pack_hd_features

    pipe, model = tiny_4khd
    h = oracle()
    transform, forward = ixc2_4khd.functions(h)
    spec = dataclasses.replace(pipe.manifest.image.preprocess, max_tiles=25)
    image = h.picture(11, *size)
    padded = transform(Image.fromarray(image), hd_num=25)
    tower = h.build_mlp.CLIPVisionTower.__new__(h.build_mlp.CLIPVisionTower)
    torch.nn.Module.__init__(tower)
    tower.vision_tower, tower.is_loaded, tower.select_layer, tower.select_feature = RecordingTower336(8), True, -1, "patch"
    g = torch.Generator().manual_seed(1)
    glb_gn, sub_gn = torch.randn(1, 1, 32, generator=g), torch.randn(1, 1, 1, 32, generator=g)
    with torch.no_grad():
        packed, lengths = forward(tower, [model.vis_processor(padded).unsqueeze(0)], glb_gn, sub_gn)
    pixels, layout = tile_and_patchify(image, spec)
    ref = tower.vision_tower.tiles.numpy()
    assert pixels.shape == ref.shape and layout.grid == (padded.height // 336, padded.width // 336)
    np.testing.assert_allclose(pixels[1:], ref[1:], atol=1e-6, rtol=0)
    np.testing.assert_allclose(pixels[0], ref[0], atol=1e-5, rtol=0)
    merged = merge_2x2(tower.vision_tower.features[:, 1:], 24).numpy()
    ours = pack_hd_features(merged, layout.grid, spec, sub_gn.reshape(-1).numpy(), glb_gn.reshape(-1).numpy())
    np.testing.assert_array_equal(ours, packed[0].numpy())
    assert ours.shape[0] == layout.num_image_tokens == lengths[0]


def test_4khd_embeddings_and_greedy_tokens_equal_the_original(tiny_4khd, tmp_path):
    """Our export of the 4KHD checkpoint: image embeddings (kernel → vision → connector → packing)
    within 1e-4 of the re-parametrised oracle's encode_img, and 24 greedy tokens identical on a
    wide, a tall (transpose branch, centred left/right padding) and a square picture, with the
    IXC2-era chat wrapping (tests/ixc2_era.py)."""
    import ixc2_4khd
    import ixc2_era
    from PIL import Image

    from vlmforge.runtime.stats import StageTimer

    pipe, model = tiny_4khd
    h = oracle()
    images = pictures(13, [(700, 300), (250, 600), (400, 400)])
    path = tmp_path / "p.png"
    Image.fromarray(images[0]).save(path)
    with ixc2_4khd.transform_4khd(h):
        ref = model.encode_img(str(path), 4)[0].numpy()
        ours = pipe.encode_image(images[0], StageTimer())
        assert ours.shape == ref.shape and np.abs(ours - ref).max() < 1e-4
        for image in images:  # the IXC2-era chat(): meta instruction, a BOS before every text part
            Image.fromarray(image).save(path)
            ours = pipe.generate(messages=user(None, QUERY), images=[image], max_new_tokens=24, ignore_eos=True)
            with torch.no_grad():
                wrapped, im_mask = ixc2_era.interleav_wrap_chat(model, model.tokenizer, "<ImageHere>" + QUERY,
                                                                model.encode_img(str(path), 4), [], ixc2_era.META)
            theirs = h.greedy(model, {"inputs_embeds": wrapped["inputs_embeds"], "im_mask": im_mask}, 24)
            assert_same_tokens(ours.token_ids, theirs, 24, set())
    assert pipe.manifest.image.preprocess.hd_padding == "center" and pipe.manifest.image.preprocess.tile_size == 336
