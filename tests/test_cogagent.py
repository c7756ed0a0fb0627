"""CogAgent: our implementation against the authors' own SwissArmyTransformer code
(../shared/reference/cogagent, variant "cogagent"), run as the oracle on a tiny random checkpoint: its
weights renamed to the HF layout (``cogagent-chat-hf``: ``model.cross_vision.vit.model.*``,
``model.layers.N.cross_attn.*``), exported by us. Its towers' widths are hard-wired upstream (1792 and
1024), so the configuration is the harness's.

The oracle must import: a missing one fails here (it is the only reference this family has)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cogvlm_cases import QUESTION, export_tiny, llm_session, oracle_prompt, run_llm, sat_masks, sat_to_hf
from conftest import random_images
from oracles import load_harness
from parity import assert_same_until_eos, user


def oracle():
    return load_harness("cogagent")


def checkpoint_config(args, sat) -> dict:
    from vlmforge.export.tiny_cogvlm import cogagent_config, tiny_config

    base = tiny_config(1, hidden=args.hidden_size, heads=args.num_attention_heads, layers=args.num_layers,
                       image_size=sat.IMG, vision_hidden=1792, vision_layers=1, vision_heads=16,
                       vocab_size=args.vocab_size)
    base["vision_config"]["intermediate_size"] = args.eva_args["inner_hidden_size"]
    base["intermediate_size"] = args.inner_hidden_size
    compute = args.cross_hidden_size_per_attention_head * args.num_attention_heads
    return cogagent_config(base, cross_image_size=sat.XIMG, cross_compute_hidden_size=compute)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    sat = oracle()
    net, args, _ = sat.build_tiny(0, model="cogagent")
    pipe = export_tiny(tmp_path_factory.mktemp("cogagent"), checkpoint_config(args, sat), sat_to_hf(net.state_dict()))
    return pipe, net, args


def sat_images(image: np.ndarray) -> dict:
    """The authors' image processor at both resolutions, keyed as their model reads them."""
    from PIL import Image

    sat, pil = oracle(), Image.fromarray(image)
    out = {"vision_" + k: v for k, v in sat.get_image_processor(sat.IMG)(pil).items()}
    out.update({"cross_" + k: v for k, v in sat.get_image_processor(sat.XIMG)(pil).items()})
    return out


def test_greedy_tokens_equal_the_authors_code_on_three_shapes(tiny, rng):
    pipe, net, args = tiny
    processor = oracle().llama2_text_processor_inference(oracle().ByteTokenizer(), 64, args.image_length)
    for image in random_images(rng, [(40, 60), (90, 30), (56, 56)]):
        messages = user(None, QUESTION)
        ours = pipe.generate(messages=messages, images=[image], max_new_tokens=24)
        ids, types = oracle_prompt(pipe, messages, 1, pad_id=0)
        inputs = {"input_ids": ids[0], "images": sat_images(image), "processor": processor, **sat_masks(types)}
        theirs = oracle().greedy(net, inputs, 24)
        assert_same_until_eos(ours.token_ids, theirs, 24, set(pipe.manifest.tokenizer.eos_token_ids))
        assert ours.stats.image_tokens == [args.image_length + 2]
        assert {"vision", "vision_aux", "connector", "cross_kv"} <= set(ours.stats.stages)  # each tower its own stage


def test_graphs_and_pixels_equal_the_authors_code(tiny, rng):
    """Both views of the dual kernel equal the authors' processor; the low-resolution embeddings,
    the high-resolution memory and the prefill's last logits (the llm graph on the cross_kv graph's
    K/V) within 1e-4 of their modules."""
    import onnxruntime as ort

    from vlmforge.kernels import pixel_views, tile_and_patchify
    from vlmforge.runtime.serving import Request
    from vlmforge.runtime.stats import StageTimer

    pipe, net, _ = tiny
    image = random_images(rng, [(45, 70)])[0]
    theirs = sat_images(image)
    views = pixel_views(tile_and_patchify(image, pipe.manifest.image.preprocess)[0], pipe.manifest.image.preprocess)
    np.testing.assert_allclose(views["pixel_values"], theirs["vision_image"].numpy(), atol=2e-6, rtol=0)
    np.testing.assert_allclose(views["pixel_values_aux"], theirs["cross_image"].numpy(), atol=2e-6, rtol=0)

    media = pipe._encode(image, StageTimer(), cache=False)
    eva, encoder = net.get_mixin("eva"), net.get_mixin("encoder")
    vision = {k[7:]: v for k, v in theirs.items() if k.startswith("vision_")}
    with torch.no_grad():
        low = eva.linear_proj(eva.vit_model(**vision)[0] + eva.pos_embed[None])
        low = torch.cat([eva.boi, low, eva.eoi], dim=1)[0].numpy()
        memory = encoder(**{k[6:]: v for k, v in theirs.items() if k.startswith("cross_")})[0].numpy()
    np.testing.assert_allclose(media.embeds, low, atol=1e-4, rtol=0)
    np.testing.assert_allclose(media.extras["cross_memory"][0], memory, atol=1e-4, rtol=0)

    prepared = pipe.prepare(Request(messages=user(None, QUESTION), images=[image]), StageTimer())
    kv_session = ort.InferenceSession(str(pipe.root / pipe.manifest.graphs["cross_kv"].path),
                                      providers=["CPUExecutionProvider"])
    names = [o.name for o in kv_session.get_outputs()]
    cross = dict(zip(names, kv_session.run(None, {"encoder_hidden_states": memory[None]})))
    logits, _ = run_llm(llm_session(pipe), pipe.manifest.llm, prepared.inputs_embeds,
                        prepared.feeds.prefill["expert_mask"], prepared.positions.prefill,
                        encoder_attention_mask=np.ones((1, memory.shape[0]), np.int64), **cross)
    ids, types = oracle_prompt(pipe, user(None, QUESTION), 1, pad_id=0)
    tokens, mask, positions = oracle().get_masks_and_position_ids(ids[0], sat_masks(types)["image_rope_mask"])
    masks = sat_masks(types)
    with torch.no_grad():
        want = net(input_ids=tokens, position_ids=positions, attention_mask=mask, vision_expert_mask=masks[
            "vision_expert_mask"], image_embed_mask=masks["image_embed_mask"], **theirs)[0][0, -1].numpy()
    np.testing.assert_allclose(logits[0, -1], want, atol=1e-4, rtol=0)


def test_a_picture_is_required_and_one_per_conversation(tiny, rng):
    """The original has no text-only path (every layer's cross-attention reads the picture)."""
    from vlmforge.runtime import PromptError

    pipe, _, _ = tiny
    with pytest.raises(PromptError, match="pass a picture"):
        pipe.generate(prompt="Hello", max_new_tokens=2)
    image, other = random_images(rng, [(40, 60), (60, 40)])
    with pytest.raises(PromptError, match="at most 1 image"):
        pipe.generate(messages=user(None, None, "Compare."), images=[image, other], max_new_tokens=2)


def test_chat_and_batch_equal_solo_runs(tiny, rng):
    from vlmforge.runtime import Pipeline
    from vlmforge.runtime.serving import Request

    pipe, _, _ = tiny
    image, other = random_images(rng, [(40, 70), (70, 40)])
    reqs = [Request(messages=user(None, QUESTION), images=[image], max_new_tokens=8),
            Request(messages=user("Where is the button?", None), images=[other], max_new_tokens=8)]
    assert [r.token_ids for r in pipe.generate_batch(reqs)] == [pipe.generate(**r.kwargs()).token_ids for r in reqs]
    own = Pipeline.load(pipe.root)
    chat = own.chat()
    chat.send(QUESTION, images=[image], max_new_tokens=6)
    second = chat.send("And then?", max_new_tokens=8)
    fresh = own.generate(messages=chat.messages[:-1], images=[image], max_new_tokens=8)
    assert second.token_ids == fresh.token_ids


def test_prompt_formats_are_the_hf_codes():
    """The chat templates render what cogagent-chat-hf's ``_history_to_prompt`` builds (its text,
    written out here: the HF code is not among the oracles), image first."""
    from vlmforge.export.families.cogvlm.template import COGAGENT, chat_template
    from vlmforge.runtime.tokenizer import _compile_template as compile_template

    history, query = [("Open the menu", "Done."), ("Then?", "Click save.")], "Where is the search box?"
    want = {
        "chat": " [INST] Open the menu [/INST] Done. [INST] Then? [/INST] Click save. [INST] " + query + " [/INST] ",
        "chat_old": "<EOI>Question: Open the menu Answer: Done.\nQuestion: Then? Answer: Click save.\nQuestion: "
                    + query + " Answer:",
        "vqa": "<EOI>Question: " + query + " Short answer:",  # single-round: the history is dropped
    }
    messages = [m for q, a in history for m in ({"role": "user", "content": q}, {"role": "assistant", "content": a})]
    for version, text in want.items():
        rendered = compile_template(chat_template(COGAGENT[version], "<image>")).render(
            messages=[*messages, *user(None, query)], add_generation_prompt=True)
        assert rendered == "<image>" + text, version


def test_grounding_boxes_in_pixels(tiny):
    """``[[x1,y1,x2,y2]]`` (0–1000) answers become boxes in the picture's pixels, labelled by the words
    before them, as the authors' grounding parser reads them."""
    from vlmforge.runtime.grounding import parse_boxes

    spec = tiny[0].manifest.image.grounding
    assert spec.format == "brackets"
    boxes = parse_boxes("The search button [[100,200,300,400]]. Two icons [[0,0,500,500;500,500,1000,1000]]",
                        spec, [(200, 400)])
    assert [(b.label, b.x1, b.y1, b.x2, b.y2) for b in boxes] == [
        ("The search button", 40, 40, 120, 80), ("Two icons", 0, 0, 200, 100), ("Two icons", 200, 100, 400, 200)]


def test_tensorrt_profiles_and_trtexec_lines(tiny):
    """Host side: the high-resolution tower, cross_kv (memory up to one picture's rows) and the llm
    with its memory inputs get profiles and trtexec lines."""
    from vlmforge.export.tensorrt import BuildOptions, plan, trtexec_commands

    pipe, _, _ = tiny
    rows = (pipe.manifest.image.preprocess.size[0] // 14) ** 2
    profiles = plan(pipe.manifest, BuildOptions()).profiles
    assert rows in [s[1] for s in profiles["cross_kv"][0]["encoder_hidden_states"]]
    cmds = trtexec_commands(pipe.manifest, BuildOptions())
    assert sorted(cmds) == ["connector", "cross_kv", "llm", "vision", "vision_aux"]


def test_checkpoint_problems_are_named(tmp_path):
    from vlmforge.export import export_model
    from vlmforge.export.tiny_cogvlm import cogagent_config, make_tiny_cogvlm, tiny_config

    cfg = cogagent_config(tiny_config(1))
    src = make_tiny_cogvlm(tmp_path / "hf", tiny_config(1))
    (src / "config.json").write_text(json.dumps({**cfg, "cross_hidden_size": 512}))
    with pytest.raises(ValueError, match="cross_hidden_size 512 must be the EVA2-CLIP-L width 1024"):
        export_model(src, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_random_configuration(tmp_path, rng):
    """The decoder's depth, width, heads and cross-attention width drawn at random (the towers' widths
    are hard-wired upstream), built as the harness builds its tiny model."""
    sat = oracle()
    seed = int(rng.integers(1 << 16))
    draw = np.random.default_rng(seed)
    args = sat.tiny_args("cogagent")
    args.num_layers = int(draw.choice([1, 3]))
    args.num_attention_heads = int(draw.choice([2, 4]))
    args.hidden_size = int(draw.choice([32, 64]))
    args.inner_hidden_size = 2 * args.hidden_size
    args.is_decoder = [True] * args.num_layers
    args.cross_hidden_size_per_attention_head = int(draw.choice([16, 32]))
    torch.manual_seed(seed)
    net = sat.CogAgentModel(args).eval()
    sat.env.init_weights_(net, seed)
    net.add_mixin("auto-regressive", sat.CachedAutoregressiveMixin())
    pipe = export_tiny(tmp_path, checkpoint_config(args, sat), sat_to_hf(net.state_dict()))
    processor = sat.llama2_text_processor_inference(sat.ByteTokenizer(), 64, args.image_length)
    image = random_images(rng, [(int(draw.integers(20, 120)), int(draw.integers(20, 120)))])[0]
    messages = user(QUESTION, None)
    ours = pipe.generate(messages=messages, images=[image], max_new_tokens=24)
    ids, types = oracle_prompt(pipe, messages, 1, pad_id=0)
    theirs = sat.greedy(net, {"input_ids": ids[0], "images": sat_images(image), "processor": processor,
                              **sat_masks(types)}, 24)
    assert_same_until_eos(ours.token_ids, theirs, 24, set(pipe.manifest.tokenizer.eos_token_ids))
