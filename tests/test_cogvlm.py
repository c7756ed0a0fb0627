"""CogVLM v1: our implementation against the transformers port of ``cogvlm-chat-hf`` with the original
weight names (../shared/reference/cogvlm1), run as the oracle on tiny random checkpoints written in
the original layout (THUDM's config.json: no model_type, the vision block's num_heads / in_channels).

The oracle must import: a missing one fails here (it is the only reference this family has)."""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest
import torch

from cogvlm_cases import QUESTION, export_tiny, llm_session, oracle_prompt, run_llm, sat_masks, sat_to_hf
from conftest import random_images
from oracles import load_harness
from parity import assert_same_until_eos, user


def oracle():
    return load_harness("cogvlm1")


def oracle_model(config: dict, seed: int):
    """The port's CogvlmForCausalLM for our tiny config.json (its vision block spelled the port's way)."""
    v = config["vision_config"]
    vision = dict(image_size=v["image_size"], patch_size=v["patch_size"], hidden_size=v["hidden_size"],
                  intermediate_size=v["intermediate_size"], num_hidden_layers=v["num_hidden_layers"],
                  num_attention_heads=v["num_heads"])
    keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
            "max_position_embeddings")
    model, _, _ = oracle().build_tiny(seed, vision_config=vision, **{k: config[k] for k in keys})
    return model


def build(root: pathlib.Path, seed: int = 0, **config):
    """(our pipeline, the oracle model): the oracle's weights saved in the original layout, exported by us."""
    from vlmforge.export.tiny_cogvlm import tiny_config

    cfg = tiny_config(1, **config)
    model = oracle_model(cfg, seed)
    return export_tiny(root, cfg, model.state_dict()), model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("cogvlm"))


def oracle_greedy(pipe, model, messages, images, n):
    from vlmforge.kernels import tile_and_patchify

    ids, types = oracle_prompt(pipe, messages, len(images), pad_id=0)
    pixels = torch.as_tensor(tile_and_patchify(images[0], pipe.manifest.image.preprocess)[0]) if images else None
    inputs = {"input_ids": ids, "token_type_ids": types, "attention_mask": torch.ones_like(ids), "pixel_values": pixels}
    return oracle().greedy(model, inputs, n)


def compare(pipe, model, images, messages, n=24):
    ours = pipe.generate(messages=messages, images=images, max_new_tokens=n)
    assert_same_until_eos(ours.token_ids, oracle_greedy(pipe, model, messages, images, n), n,
                          set(pipe.manifest.tokenizer.eos_token_ids))
    return ours


def test_greedy_tokens_equal_the_original_on_three_shapes_and_text_only(tiny, rng):
    pipe, model = tiny
    for image in random_images(rng, [(40, 60), (90, 30), (28, 28)]):
        ours = compare(pipe, model, [image], user(QUESTION, None))
        assert ours.stats.image_tokens == [(28 // 14) ** 2 + 2]
    # text only: the language experts alone (every token type 0 in the original)
    compare(pipe, model, [], [{"role": "user", "content": "Tell me a story about a cat."}])


def test_graphs_equal_the_original_modules(tiny, rng):
    """The vision + connector output and the prefill's last logits within 1e-4 of the original's."""
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime.serving import Request
    from vlmforge.runtime.stats import StageTimer

    pipe, model = tiny
    image = random_images(rng, [(70, 45)])[0]
    pixels, _ = tile_and_patchify(image, pipe.manifest.image.preprocess)
    ours = pipe.encode_image(image, StageTimer())
    with torch.no_grad():
        theirs = model.model.vision(torch.as_tensor(pixels))[0].numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    # the original's transform: PIL bicubic resize to the square, ToTensor, CLIP normalise
    from PIL import Image

    size = pipe.manifest.image.preprocess.size[0]
    ref = np.asarray(Image.fromarray(image).resize((size, size), Image.BICUBIC), np.float32) / 255.0
    mean, std = np.array(pipe.manifest.image.preprocess.mean), np.array(pipe.manifest.image.preprocess.std)
    np.testing.assert_allclose(pixels[0], ((ref - mean) / std).transpose(2, 0, 1), atol=2e-6, rtol=0)

    ids, types = oracle_prompt(pipe, user(QUESTION, None), 1, pad_id=0)
    prepared = pipe.prepare(Request(messages=user(QUESTION, None), images=[image]), StageTimer())
    logits, _ = run_llm(llm_session(pipe), pipe.manifest.llm, prepared.inputs_embeds,
                        prepared.feeds.prefill["expert_mask"], prepared.positions.prefill)
    with torch.no_grad():
        want = model(input_ids=ids, token_type_ids=types, attention_mask=torch.ones_like(ids),
                     pixel_values=torch.as_tensor(pixels)).logits[0, -1].numpy()
    np.testing.assert_allclose(logits[0, -1], want, atol=1e-4, rtol=0)


def test_positions_and_expert_mask_are_the_originals(tiny, rng):
    """shared_span positions and the expert mask equal build_position_ids / get_expert_mask on
    layouts with the image anywhere (first, after text, at the end, several runs)."""
    from vlmforge.runtime.positions import plan_positions
    from vlmforge.runtime.token_inputs import image_mask

    mc = oracle().mc
    spec = tiny[0].manifest.llm.positions
    for _ in range(20):
        seq = int(rng.integers(8, 40))
        starts = sorted(set(int(x) for x in rng.integers(0, seq - 4, int(rng.integers(0, 3)))))
        slots, cursor = [], 0
        for s in starts:  # runs of ≥ 3 slots, never touching each other
            if s >= cursor:
                count = int(rng.integers(3, 6))
                if s + count <= seq:
                    slots.append((s, count))
                    cursor = s + count + 1
        types = np.zeros(seq, np.int64)
        for s, c in slots:
            types[s : s + c] = 1
        tt = torch.as_tensor(types)[None]
        plan = plan_positions(spec, seq, slots, [(1, 1, 1)] * len(slots))
        np.testing.assert_array_equal(plan.prefill, mc.build_position_ids(tt, torch.ones_like(tt)).numpy())
        vision, _ = mc.get_expert_mask(tt)
        np.testing.assert_array_equal(image_mask(seq, slots, skip_last=1), vision.numpy().astype(np.float32))
        assert plan.decode(seq)[0, 0] == plan.prefill.max() + 1  # decoding continues after the last position


def test_expert_routing_on_its_own(tiny, rng):
    """An all-text prompt gives the plain language-expert decoder's logits (a LlamaForCausalLM built
    from the language weights); flipping one position's token type changes that position's route only:
    its layer-0 keys/values change, every earlier position's stay, and so does the route of the rest."""
    from transformers import LlamaConfig, LlamaForCausalLM

    pipe, model = tiny
    llm, c = pipe.manifest.llm, model.config
    session = llm_session(pipe)
    s = 12
    embeds = rng.standard_normal((1, s, llm.hidden_size)).astype(np.float32)
    text_logits, _ = run_llm(session, llm, embeds, np.zeros((1, s)))
    plain = LlamaForCausalLM(LlamaConfig(vocab_size=c.vocab_size, hidden_size=c.hidden_size,
                                         intermediate_size=c.intermediate_size, num_hidden_layers=c.num_hidden_layers,
                                         num_attention_heads=c.num_attention_heads, rms_norm_eps=c.rms_norm_eps,
                                         max_position_embeddings=c.max_position_embeddings)).eval()
    state, d = model.state_dict(), c.hidden_size
    mapped = {"model.norm.weight": state["model.norm.weight"], "lm_head.weight": state["lm_head.weight"],
              "model.embed_tokens.weight": state["model.embed_tokens.weight"]}
    for i in range(c.num_hidden_layers):
        p, q = f"model.layers.{i}.", f"model.layers.{i}."
        qkv = state[p + "self_attn.language_expert_query_key_value.weight"]
        for name, part in zip(("q", "k", "v"), qkv.split(d)):
            mapped[q + f"self_attn.{name}_proj.weight"] = part
        mapped[q + "self_attn.o_proj.weight"] = state[p + "self_attn.language_expert_dense.weight"]
        for name in ("gate_proj", "up_proj", "down_proj"):
            mapped[q + f"mlp.{name}.weight"] = state[p + f"mlp.language_mlp.{name}.weight"]
        for name in ("input_layernorm", "post_attention_layernorm"):
            mapped[q + f"{name}.weight"] = state[p + f"{name}.weight"]
    plain.load_state_dict(mapped)
    with torch.no_grad():
        want = plain(inputs_embeds=torch.as_tensor(embeds)).logits[0, -1].numpy()
    np.testing.assert_allclose(text_logits[0, -1], want, atol=1e-4, rtol=0)

    base = (rng.random((1, s)) < 0.5).astype(np.float32)
    _, before = run_llm(session, llm, embeds, base)
    j = 5
    flipped = base.copy()
    flipped[0, j] = 1 - flipped[0, j]
    _, after = run_llm(session, llm, embeds, flipped)
    changed = np.abs(after[0] - before[0]).max(axis=(0, 1, 3))  # layer 0's keys, per position
    assert changed[j] > 1e-3 and np.all(changed[np.arange(s) != j] == 0), changed
    for a, b in zip(after, before):  # no layer's keys or values move before the flipped position
        np.testing.assert_array_equal(a[:, :, :j], b[:, :, :j])


def test_chat_batch_and_one_image_per_prompt(tiny, rng):
    """A chat's second turn equals a fresh run of the whole conversation (its first turn's cache
    reused); a batch equals solo runs; a second picture is refused with the limit and the fix."""
    from vlmforge.runtime import Pipeline, PromptError
    from vlmforge.runtime.serving import Request

    pipe, _ = tiny
    image, other = random_images(rng, [(40, 70), (70, 40)])
    own = Pipeline.load(pipe.root)
    chat = own.chat()
    chat.send(QUESTION, images=[image], max_new_tokens=6)
    second = chat.send("And the colours?", max_new_tokens=10)
    fresh = own.generate(messages=chat.messages[:-1], images=[image], max_new_tokens=10)
    assert second.token_ids == fresh.token_ids and second.stats.cached_prompt_tokens > 0
    reqs = [Request(messages=user(QUESTION, None), images=[image], max_new_tokens=8),
            Request(prompt="Hello", max_new_tokens=8)]
    assert [r.token_ids for r in pipe.generate_batch(reqs)] == [pipe.generate(**r.kwargs()).token_ids for r in reqs]
    with pytest.raises(PromptError, match="at most 1 image"):
        pipe.generate(messages=user(None, None, "Compare."), images=[image, other], max_new_tokens=2)
    with pytest.raises(PromptError, match="at most 1 image"):
        chat.send("And this one?", images=[other], max_new_tokens=2)
    with pytest.raises(PromptError, match="user and assistant turns only"):
        pipe.generate(messages=[{"role": "system", "content": "Be brief."}, *user(QUESTION)], max_new_tokens=2)


def test_prompt_format_is_the_originals():
    """The chat template renders what the original's ``_history_to_prompt`` builds, for every template
    version, image first."""
    from vlmforge.export.families.cogvlm.template import COGVLM, chat_template
    from vlmforge.runtime.tokenizer import _compile_template as compile_template

    history_to_prompt = load_harness("cogvlm").mc._history_to_prompt
    history = [("Hi there", "Hello!"), ("What now?", "A cat.")]
    for version in ("chat", "vqa"):
        messages = [m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
        messages += user(None, "Which colour?")
        text = compile_template(chat_template(COGVLM[version], "<image>")).render(messages=messages, add_generation_prompt=True)
        assert text == "<image>" + history_to_prompt(version, history, "Which colour?")
    assert chat_template(COGVLM.get("base"), "<image>") is None  # the raw query


def test_checkpoint_problems_are_named(tmp_path):
    """No tokenizer (cogvlm-chat-hf ships none), an odd vision block, or weights that do not fit: a
    clear error naming the fix, the output folder never half-written."""
    from vlmforge.export import export_model
    from vlmforge.export.tiny_cogvlm import make_tiny_cogvlm, tiny_config

    src = make_tiny_cogvlm(tmp_path / "hf", tiny_config(1))
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (src / name).unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError, match="vicuna-7b-v1.5"):
        export_model(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    bad = make_tiny_cogvlm(tmp_path / "bad", tiny_config(1))
    cfg = json.loads((bad / "config.json").read_text())
    cfg["vision_config"]["num_positions"] = 7
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="num_positions 7 must be"):
        export_model(bad, tmp_path / "out")
    cfg["vision_config"]["num_positions"] = 5
    cfg["hidden_size"] = 32
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="do not fit its config.json"):
        export_model(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_random_configuration(tmp_path, rng):
    seed = int(rng.integers(1 << 16))
    draw = np.random.default_rng(seed)
    config = dict(layers=int(draw.choice([1, 3])), heads=int(draw.choice([2, 4, 8])), hidden=int(draw.choice([32, 64])),
                  vision_layers=int(draw.choice([1, 2])), image_size=int(draw.choice([28, 42, 56])),
                  vision_heads=int(draw.choice([1, 2, 4])))
    pipe, model = build(tmp_path, seed=seed, **config)
    image = random_images(rng, [(int(draw.integers(20, 120)), int(draw.integers(20, 120)))])[0]
    ours = compare(pipe, model, [image], user(None, QUESTION))
    assert ours.stats.image_tokens == [(config["image_size"] // 14) ** 2 + 2], (seed, config)


# -- the authors' own implementation (SwissArmyTransformer), the semantic oracle ----------------------

def test_greedy_tokens_equal_the_authors_sat_implementation(tmp_path, rng):
    """CogVLM v1 as THUDM's own SwissArmyTransformer code builds it (../shared/reference/cogagent,
    variant "cogvlm"; its width-1792 tower is hard-wired): its weights renamed to the HF layout,
    exported by us; 24 greedy tokens equal to its ``filling_sequence`` with the KV cache, fed the
    pixels of its own image processor and the masks its text processor would build for our prompt."""
    from PIL import Image

    from vlmforge.export.tiny_cogvlm import tiny_config

    sat = load_harness("cogagent")
    net, args, _ = sat.build_tiny(0, model="cogvlm")
    cfg = tiny_config(1, hidden=args.hidden_size, heads=args.num_attention_heads, layers=args.num_layers,
                      image_size=sat.IMG, vision_hidden=1792, vision_layers=1, vision_heads=16, vocab_size=args.vocab_size)
    cfg["vision_config"]["intermediate_size"] = args.eva_args["inner_hidden_size"]
    cfg["intermediate_size"] = args.inner_hidden_size
    pipe = export_tiny(tmp_path, cfg, sat_to_hf(net.state_dict()))
    processor = sat.llama2_text_processor_inference(sat.ByteTokenizer(), 64, args.image_length)
    for image in [*random_images(rng, [(40, 60), (80, 30)]), None]:
        images = [] if image is None else [image]
        messages = user(None, QUESTION) if images else [{"role": "user", "content": "Tell me a story."}]
        ours = pipe.generate(messages=messages, images=images, max_new_tokens=24)
        ids, types = oracle_prompt(pipe, messages, len(images), pad_id=0)
        masks = sat_masks(types)
        pixels = {} if image is None else {"vision_" + k: v for k, v in
                                           sat.get_image_processor(sat.IMG)(Image.fromarray(image)).items()}
        theirs = sat.greedy(net, {"input_ids": ids[0], "images": pixels, "processor": processor, **masks}, 24)
        assert_same_until_eos(ours.token_ids, theirs, 24, set(pipe.manifest.tokenizer.eos_token_ids))


def test_tensorrt_profiles_and_trtexec_lines(tiny):
    """Host side: the llm's expert_mask follows the sequence axis in both profiles (prefill up to the
    context, decode one token), and every graph gets a trtexec line."""
    from vlmforge.export.tensorrt import BuildOptions, plan, trtexec_commands

    pipe, _ = tiny
    prefill, decode = plan(pipe.manifest, BuildOptions()).profiles["llm"]
    assert [s[1] for s in prefill["expert_mask"]] == [s[1] for s in prefill["inputs_embeds"]]
    assert prefill["expert_mask"][2][1] == pipe.manifest.llm.max_context
    assert [s[1] for s in decode["expert_mask"]] == [1, 1, 1]
    cmds = trtexec_commands(pipe.manifest, BuildOptions())
    assert sorted(cmds) == ["connector", "llm", "vision"]
    assert f"expert_mask:1x{pipe.manifest.llm.max_context}" in " ".join(cmds["llm"])
