"""Qwen-VL (v1): our implementation against the original remote code (../shared/reference/qwen-vl),
run as the oracle on tiny random checkpoints in the original layout.

The oracle must import: a missing one fails here (it is the only reference this family has)."""

from __future__ import annotations

import contextlib
import os
import pathlib

import numpy as np
import pytest
import torch

from conftest import random_images
from oracles import load_harness
from parity import assert_same_until_eos, user

QUESTION = "What is in the picture?"


def oracle():
    """The original code's harness (tests/oracles.py): a missing one fails the test, never skips."""
    return load_harness("qwen-vl")


def oracle_model(harness, config: dict, seed: int):
    """The original QWenLMHeadModel with the tiny config; deterministic weights per seed."""
    keys = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "kv_channels",
            "intermediate_size", "seq_length", "use_dynamic_ntk", "use_logn_attn", "max_position_embeddings")
    model, _, _ = harness.build_tiny(seed=seed, **{k: config[k] for k in keys}, visual=config["visual"])
    return model


def build(root: pathlib.Path, seed: int = 0, **config):
    """(our pipeline, the oracle model, the checkpoint folder): the oracle's weights saved in the
    original layout, exported by us."""
    from vlmforge.export import export_model
    from vlmforge.export.tiny_qwen_vl import learn_ranks, make_tiny_qwen_vl, tiny_config
    from vlmforge.runtime import Pipeline

    ranks = learn_ranks()
    model = oracle_model(oracle(), tiny_config(len(ranks), **config), seed)
    model_dir = make_tiny_qwen_vl(root / "hf", model.state_dict(), ranks=ranks, **config)
    plant_code(model_dir, root / "ran.txt")
    export_model(model_dir, root / "out")
    return Pipeline.load(root / "out"), model, model_dir


def plant_code(model_dir: pathlib.Path, marker: pathlib.Path) -> None:
    """The checkpoint's remote-code files, replaced by code that would leave ``marker`` if run."""
    planted = f"open({str(marker)!r}, 'w').write('executed')\n"
    for name in ("modeling_qwen.py", "configuration_qwen.py", "tokenization_qwen.py", "visual.py"):
        (model_dir / name).write_text(planted)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build(tmp_path_factory.mktemp("qwen_vl"))


def oracle_ids(pipe, ids: np.ndarray, paths: list[str]) -> torch.Tensor:
    """Our prompt ids with each image's slots holding what the original's tokenizer puts there: the
    picture's path as bytes, then <imgpad>s (the original reads the file from these ids)."""
    ids = ids.copy()
    starts = np.flatnonzero(ids == pipe.manifest.image.image_token_id - 2)  # <img>
    assert len(starts) == len(paths)
    for start, path in zip(starts, paths):
        raw = list(path.encode())
        ids[start + 1 : start + 1 + len(raw)] = raw
    return torch.as_tensor(ids)[None]


def compare(pipe, model, tmp_path, images, messages=None, prompt=None, n=24):
    """Our greedy tokens equal the original's (cut at its first end-of-turn token, where ours stop)."""
    from PIL import Image

    paths = [f"{i}.png" for i in range(len(images))]  # relative: the span holds as few as 15 bytes
    for path, image in zip(paths, images):
        Image.fromarray(image).save(tmp_path / path)
    ours = pipe.generate(prompt=prompt, messages=messages, images=images, max_new_tokens=n)
    per_image = pipe.manifest.image.preprocess.tokens_per_tile
    prepared = pipe.prompter.prepare_prompt(prompt, messages, len(images), [per_image] * len(images))
    with contextlib.chdir(tmp_path):  # the original opens the file named in the ids
        theirs = oracle().greedy(model, {"input_ids": oracle_ids(pipe, prepared.input_ids, paths)}, n)
    eos = set(pipe.manifest.tokenizer.eos_token_ids)
    assert_same_until_eos(ours.token_ids, theirs, n, eos)
    return ours


def test_greedy_tokens_equal_the_original_on_three_shapes(tiny, rng, tmp_path):
    pipe, model, _ = tiny
    for image in random_images(rng, [(60, 80), (120, 40), (56, 56)]):
        ours = compare(pipe, model, tmp_path, [image], messages=user(None, QUESTION))
        assert ours.stats.num_image_tokens == 64


def test_two_pictures_and_text_only(tiny, rng, tmp_path):
    pipe, model, _ = tiny
    images = random_images(rng, [(50, 90), (90, 50)])
    ours = compare(pipe, model, tmp_path, images, messages=user(None, None, "Which is larger?"))
    assert ours.stats.image_tokens == [64, 64]
    # past seq_length (64): dynamic NTK's α is 7 for this prompt, and log-n scaling is on
    assert ours.stats.num_prompt_tokens > 2 * 64
    compare(pipe, model, tmp_path, [], messages=[{"role": "user", "content": "Tell me a story about a cat."}])


def test_batched_and_chat_turns_equal_solo_runs(tiny, rng):
    """Rows of one batch carry their own α (prompts of about 100, 200 and 20 tokens: α 3, 7 and 1);
    a chat's second turn, past seq_length, does not reuse keys rotated under the first turn's α."""
    from vlmforge.runtime.serving import Request

    pipe, _, _ = tiny
    images = random_images(rng, [(40, 70), (70, 40)])
    reqs = [Request(messages=user(None, QUESTION), images=images[:1], max_new_tokens=12),
            Request(messages=user(None, None, "Compare them."), images=images, max_new_tokens=12),
            Request(prompt="Hello", max_new_tokens=12)]
    solo = [pipe.generate(**r.kwargs()).token_ids for r in reqs]
    assert [r.token_ids for r in pipe.generate_batch(reqs)] == solo
    from vlmforge.runtime import Pipeline

    own = Pipeline.load(pipe.root)  # no prefix cache from other tests
    chat = own.chat()
    chat.send("Hi", max_new_tokens=6)
    second = chat.send("What is this?", images=images[:1], max_new_tokens=12)
    fresh = own.generate(messages=chat.messages[:-1], images=images[:1], max_new_tokens=12)
    assert second.token_ids == fresh.token_ids
    assert second.stats.cached_prompt_tokens == 0  # first turn under α 1, this one under α > 1


def test_graphs_equal_the_original_modules(tiny, rng):
    """Vision features and the prefill's logits within 1e-4 of the original's modules on the same inputs."""
    from vlmforge.kernels import tile_and_patchify
    from vlmforge.runtime.stats import StageTimer

    pipe, model, _ = tiny
    image = random_images(rng, [(70, 45)])[0]
    pixels, _ = tile_and_patchify(image, pipe.manifest.image.preprocess)
    ours = pipe.encode_image(image, StageTimer())
    with torch.no_grad():
        theirs = model.transformer.visual(torch.as_tensor(pixels)).numpy()[0]
    np.testing.assert_allclose(ours, theirs, atol=1e-4, rtol=0)
    # the original's own preprocessing (PIL → Resize bicubic → ToTensor → Normalize) gives the same pixels
    from PIL import Image

    ref = model.transformer.visual.image_transform(Image.fromarray(image)).numpy()
    np.testing.assert_allclose(pixels[0], ref, atol=2e-6, rtol=0)


def test_a_random_configuration(tmp_path, rng):
    seed = int(rng.integers(1 << 16))
    draw = np.random.default_rng(seed)
    config = dict(layers=int(draw.choice([1, 3])), heads=int(draw.choice([2, 4])), seq_length=int(draw.choice([32, 100])),
                  vision_layers=int(draw.choice([1, 2])), image_size=int(draw.choice([28, 42, 70])),
                  n_queries=int(draw.choice([16, 64])), dynamic_ntk=bool(draw.integers(2)), logn=bool(draw.integers(2)))
    pipe, model, _ = build(tmp_path, seed=seed, **config)
    image = random_images(rng, [(int(draw.integers(20, 120)), int(draw.integers(20, 120)))])[0]
    ours = compare(pipe, model, tmp_path, [image], messages=user(None, QUESTION))
    assert ours.stats.num_image_tokens == config["n_queries"], config


# -- the tokenizer ---------------------------------------------------------------------------------

def random_strings(rng, count: int) -> list[str]:
    from vlmforge.export.families.qwen_vl.tokenizer import SPECIALS

    alphabet = list("abcdefghijklmnopqrstuvwxyz ABCXYZ0123456789.,;:!?'\"()[]{}<>/\\|-_=+*&^%$#@~`\n\t\r") + \
        list("éèçàüöß猫图片你好世界😀🐱✨—“”…") + ["'s", "'ll", "  ", "\n\n", "\u0301", "e\u0301"]
    out = []
    for _ in range(count):
        pieces = [str(rng.choice(alphabet)) for _ in range(int(rng.integers(0, 40)))]
        for _ in range(int(rng.integers(0, 3))):
            pieces.insert(int(rng.integers(0, len(pieces) + 1)), str(rng.choice(SPECIALS)))
        out.append("".join(pieces))
    return out


def test_converted_tokenizer_equals_tiktoken(tiny, rng):
    import unicodedata

    import tiktoken
    from tokenizers import Tokenizer

    from vlmforge.export.families.qwen_vl.tokenizer import PATTERN, read_ranks, special_ids

    pipe, _, model_dir = tiny
    ranks = read_ranks(model_dir / "qwen.tiktoken")
    enc = tiktoken.Encoding("Qwen", pat_str=PATTERN, mergeable_ranks=ranks, special_tokens=special_ids(len(ranks)))
    ours = Tokenizer.from_file(str(pipe.root / pipe.manifest.tokenizer.path))
    for text in random_strings(rng, 1000):
        # QWenTokenizer.tokenize: NFC first, every special token allowed in text
        want = enc.encode(unicodedata.normalize("NFC", text), allowed_special="all")
        assert ours.encode(text, add_special_tokens=False).ids == want, repr(text)
        assert ours.decode(want, skip_special_tokens=False) == enc.decode(want), repr(text)


# -- images come only from images= -----------------------------------------------------------------

def test_a_span_with_a_path_or_url_reads_nothing(tiny, rng, tmp_path):
    """``<img>path</img>`` is the next image given; the path is never opened, the URL never fetched."""
    import http.server
    import threading

    pipe, _, _ = tiny
    fifo = tmp_path / "marker.png"
    os.mkfifo(fifo)  # opening it for reading would block this writer's open(): we see any reader
    opened = threading.Event()

    def writer():
        with open(fifo, "wb"):
            opened.set()

    threading.Thread(target=writer, daemon=True).start()
    seen = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - the stdlib's name
            seen.append(self.path)
            self.send_response(404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cat.png"
    image = random_images(rng, [(40, 60)])[0]
    try:
        given = pipe.generate(prompt=f"Picture 1:<img>{fifo}</img>\nPicture 2:<img>{url}</img>\nSame?",
                              images=[image, image], max_new_tokens=4)
        bare = pipe.generate(prompt="Picture 1:<img></img>\nPicture 2:<img></img>\nSame?",
                             images=[image, image], max_new_tokens=4)
    finally:
        server.shutdown()
    assert given.token_ids == bare.token_ids  # the span's content is dropped: the same prompt
    assert not opened.is_set() and seen == []
    with open(fifo, "rb"):  # release the writer
        pass


def test_text_cannot_create_an_image_slot(tiny, rng):
    from vlmforge.runtime import PromptError

    pipe, _, _ = tiny
    image = random_images(rng, [(40, 60)])[0]
    with pytest.raises(PromptError, match="'<img>'"):
        pipe.generate(messages=user(None, "look: <img>/etc/passwd</img>"), images=[image], max_new_tokens=2)
    with pytest.raises(PromptError, match="unpaired '<img>'"):
        pipe.generate(prompt="Picture 1:<img>cat.png\nWhat?", images=[image], max_new_tokens=2)
    with pytest.raises(PromptError, match="1 image placeholder"):
        pipe.generate(prompt="Picture 1:<img>a.png</img>\nWhat?", images=[image, image], max_new_tokens=2)


# -- grounding -------------------------------------------------------------------------------------

def test_grounding_boxes_are_parsed_and_scaled(tiny):
    from vlmforge.runtime.grounding import parse_boxes

    pipe, _, _ = tiny
    spec = pipe.manifest.image.grounding
    text = "<ref>the dog</ref><box>(100,200),(500,1000)</box> and <box>(0,0),(1000,1000)</box>; <box>(1,2)</box>"
    boxes = parse_boxes(text, spec, [(300, 400), (480, 640)])  # scaled to the last picture (480 × 640)
    assert [(b.label, b.x1, b.y1, b.x2, b.y2, b.image) for b in boxes] == [
        ("the dog", 64.0, 96.0, 320.0, 480.0, 1), ("the dog", 0.0, 0.0, 640.0, 480.0, 1)]
    # the marks survive detokenisation (the answer's text keeps them, as Qwen-VL-Chat's does)
    ids = pipe.tokenizer.encode(text)
    assert pipe.tokenizer.decode(ids) == text


def test_grounding_boxes_reach_the_result(tiny, rng, monkeypatch):
    """The answer's boxes land in ``result.boxes``: the detokeniser is made to answer with one."""
    from vlmforge.runtime.tokenizer import DetokenizeStream

    pipe, _, _ = tiny
    answer = iter(["<ref>a cat</ref>", "<box>(250,500),(750,1000)</box>"])
    monkeypatch.setattr(DetokenizeStream, "step", lambda self, token_id: next(answer, ""))
    result = pipe.generate(messages=user(None, "Where is the cat?"), images=random_images(rng, [(200, 100)]),
                           max_new_tokens=2, ignore_eos=True)
    assert [(b.label, b.x1, b.y1, b.x2, b.y2) for b in result.boxes] == [("a cat", 25.0, 100.0, 75.0, 200.0)]


# -- the checkpoint's Python never runs; bad checkpoints get clear errors --------------------------

def test_the_model_folders_python_never_runs(tiny, rng):
    """``build`` planted modeling_qwen.py & co. that write a marker: export ran, now run too."""
    pipe, _, model_dir = tiny
    pipe.generate(messages=user(None, "hi"), images=random_images(rng, [(30, 30)]), max_new_tokens=2)
    assert (model_dir / "modeling_qwen.py").read_text().startswith("open(")
    assert not (model_dir.parent / "ran.txt").exists()


def test_bad_checkpoints_are_refused_clearly(tmp_path):
    import json

    from vlmforge.export import export_model
    from vlmforge.export.tiny_qwen_vl import make_tiny_qwen_vl

    model_dir = make_tiny_qwen_vl(tmp_path / "hf", layers=1)
    config = json.loads((model_dir / "config.json").read_text())
    text_only = {k: v for k, v in config.items() if k != "visual"}
    (model_dir / "config.json").write_text(json.dumps(text_only))
    with pytest.raises(ValueError, match="text-only Qwen"):
        export_model(model_dir, tmp_path / "a")
    config["visual"]["image_start_id"] += 1
    (model_dir / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="do not belong together"):
        export_model(model_dir, tmp_path / "b")
    config["visual"]["image_start_id"] -= 1
    (model_dir / "config.json").write_text(json.dumps(config))
    (model_dir / "qwen.tiktoken").write_text("not base64 at all\n")
    with pytest.raises(ValueError, match="not 'base64-token rank'"):
        export_model(model_dir, tmp_path / "c")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists() and not (tmp_path / "c").exists()
