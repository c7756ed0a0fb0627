"""InternLM-XComposer (v1): our export against an oracle COMPOSED from transformers modules — no
original implementation of v1 is available, so (as issue 22 says) the reference is BLIP-2's vision
model and Q-Former and a Llama decoder with attention biases, loaded here from the original weight
names by this file's own renames, run as the published ``modeling_InternLM_XComposer.py`` wires
them (``encode_img``, ``wrap_prompt`` with every segment tokenised on its own by sentencepiece,
``chat``'s history for a second picture). Tiny random checkpoints in the original layout; the
configuration is drawn at random from a fixed seed."""

from __future__ import annotations

import json
import pathlib
import re
import shutil

import numpy as np
import pytest
import torch

from parity import assert_same_tokens

PLANTED = ("modeling_InternLM_XComposer.py", "modeling_InternLM.py", "modeling_vit.py", "modeling_perceive_sampler.py",
           "modeling_utils.py", "configuration_InternLM_XComposer.py", "tokenization_InternLM_XComposer.py")
EOH = "<TOKENS_UNUSED_0>"
MEAN, STD = np.array([0.48145466, 0.4578275, 0.40821073]), np.array([0.26862954, 0.26130258, 0.27577711])


def drawn_dims(seed: int):
    from vlmforge.export.tiny_internlm_xcomposer import TinyDims

    draw = np.random.default_rng(seed)
    return TinyDims(vision_layers=int(draw.choice([1, 2])), image_size=int(draw.choice([42, 56])),
                    qformer_layers=int(draw.choice([1, 2, 3])), num_query_token=int(draw.choice([4, 8])),
                    hidden_size=int(draw.choice([64, 96])), num_hidden_layers=int(draw.choice([1, 2])),
                    num_attention_heads=int(draw.choice([2, 4])), kqvo_bias=True)  # InternLM-7B's q / k / v / o biases


# -- the composed oracle ------------------------------------------------------------------------------

def _vision_names(state: dict) -> dict:
    """EVA ViT-g (LAVIS) + ln_vision → Blip2VisionModel's names."""
    out = {"embeddings.class_embedding": state["visual_encoder.cls_token"],
           "embeddings.position_embedding": state["visual_encoder.pos_embed"],
           "embeddings.patch_embedding.weight": state["visual_encoder.patch_embed.proj.weight"],
           "embeddings.patch_embedding.bias": state["visual_encoder.patch_embed.proj.bias"],
           "post_layernorm.weight": state["ln_vision.weight"], "post_layernorm.bias": state["ln_vision.bias"]}
    renames = {"norm1": "layer_norm1", "norm2": "layer_norm2", "attn.qkv": "self_attn.qkv",
               "attn.proj": "self_attn.projection", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2"}
    for key, value in state.items():
        m = re.match(r"visual_encoder\.blocks\.(\d+)\.(.+)\.(weight|bias)$", key)
        if m:
            out[f"encoder.layers.{m.group(1)}.{renames[m.group(2)]}.{m.group(3)}"] = value
        m = re.match(r"visual_encoder\.blocks\.(\d+)\.attn\.q_bias$", key)
        if m:
            q, v = value, state[f"visual_encoder.blocks.{m.group(1)}.attn.v_bias"]
            out[f"encoder.layers.{m.group(1)}.self_attn.qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    return out


def _qformer_names(state: dict) -> dict:
    out = {"layernorm.weight": state["Qformer.bert.embeddings.LayerNorm.weight"],
           "layernorm.bias": state["Qformer.bert.embeddings.LayerNorm.bias"]}
    for key, value in state.items():
        if key.startswith("Qformer.bert.encoder."):
            out[key[len("Qformer.bert."):].replace(".self.", ".attention.")] = value
    return out


class Oracle:
    """The original's forward passes from transformers modules under the original names."""

    def __init__(self, model_dir: pathlib.Path):
        import sentencepiece as spm
        from safetensors.torch import load_file
        from transformers import (Blip2QFormerConfig, Blip2QFormerModel, Blip2VisionConfig, Blip2VisionModel,
                                  LlamaConfig, LlamaForCausalLM)

        state = load_file(str(model_dir / "model.safetensors"))
        config = json.loads((model_dir / "config.json").read_text())
        self.sp = spm.SentencePieceProcessor(model_file=str(model_dir / "tokenizer.model"))
        w, p = state["visual_encoder.patch_embed.proj.weight"].shape[0], state["visual_encoder.patch_embed.proj.weight"].shape[2]
        grid = int(round((state["visual_encoder.pos_embed"].shape[1] - 1) ** 0.5))
        depth = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("visual_encoder.blocks."))
        self.size = grid * p
        self.vision = Blip2VisionModel(Blip2VisionConfig(
            hidden_size=w, intermediate_size=4 * w, num_hidden_layers=depth, num_attention_heads=16, image_size=self.size,
            patch_size=p, layer_norm_eps=1e-6, attn_implementation="eager")).eval()
        self.vision.post_layernorm.eps = 1e-5  # ln_vision: nn.LayerNorm's default
        self.vision.load_state_dict(_vision_names(state), strict=True)
        self.queries = state["query_tokens"]
        h = self.queries.shape[-1]
        qdepth = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("Qformer.bert.encoder.layer."))
        self.qformer = Blip2QFormerModel(Blip2QFormerConfig(
            hidden_size=h, num_hidden_layers=qdepth, num_attention_heads=h // 64, intermediate_size=2 * h,
            encoder_hidden_size=w, cross_attention_frequency=2, attn_implementation="eager")).eval()
        self.qformer.load_state_dict(_qformer_names(state), strict=True)
        self.proj_w, self.proj_b = state["internlm_proj.weight"], state["internlm_proj.bias"]
        self.start, self.end = state["flag_image_start"], state["flag_image_end"]
        self.llm = LlamaForCausalLM(LlamaConfig(
            vocab_size=config["vocab_size"], hidden_size=config["hidden_size"], intermediate_size=config["intermediate_size"],
            num_hidden_layers=config["num_hidden_layers"], num_attention_heads=config["num_attention_heads"],
            rms_norm_eps=config["rms_norm_eps"], attention_bias=config["kqvo_bias"], tie_word_embeddings=False,
            attn_implementation="eager")).eval()
        llm = {k[len("internlm_model."):]: v for k, v in state.items()
               if k.startswith("internlm_model.") and not k.endswith("inv_freq")}
        self.llm.load_state_dict(llm, strict=True)

    def pixels(self, image: np.ndarray) -> torch.Tensor:
        """vis_processor: Resize((s, s), BICUBIC) on the PIL picture, ToTensor, Normalize."""
        from PIL import Image

        x = np.asarray(Image.fromarray(image).resize((self.size, self.size), Image.BICUBIC), np.float32) / 255.0
        return torch.from_numpy(((x - MEAN) / STD).astype(np.float32).transpose(2, 0, 1))[None]

    @torch.no_grad()
    def connector(self, features: torch.Tensor) -> torch.Tensor:
        out = self.qformer(query_embeds=self.queries.expand(features.shape[0], -1, -1), encoder_hidden_states=features,
                           encoder_attention_mask=torch.ones(features.shape[:-1], dtype=torch.long)).last_hidden_state
        n = features.shape[0]
        return torch.cat([self.start.expand(n, -1, -1), out @ self.proj_w.T + self.proj_b, self.end.expand(n, -1, -1)], 1)

    @torch.no_grad()
    def encode_img(self, image: np.ndarray) -> torch.Tensor:
        return self.connector(self.vision(pixel_values=self.pixels(image)).last_hidden_state)

    def text(self, text: str, bos: bool) -> torch.Tensor:
        ids = ([self.sp.bos_id()] if bos else []) + self.sp.encode(text)
        with torch.no_grad():
            return self.llm.model.embed_tokens(torch.tensor([ids], dtype=torch.long))

    def turn(self, image, text: str, first: bool, last: bool) -> list[torch.Tensor]:
        """wrap_prompt: [' <|User|>:' (BOS when it starts the prompt or a history turn)], the picture, the text,
        ['\\n<eoh> <|Bot|>:'] — or ' <|Bot|>:' for a history turn (add_special=False)."""
        parts = [self.text(" <|User|>:", bos=first or not last)]
        if image is not None:
            parts.append(self.encode_img(image))
        parts += [self.text(text, bos=False), self.text(f"\n{EOH} <|Bot|>:" if last else " <|Bot|>:", bos=False)]
        return parts

    def prompt(self, turns, answers=()) -> torch.Tensor:
        """``turns``: (picture or None, text) each; ``answers``: the history answers (BOS + text, as chat()
        re-tokenises them)."""
        parts = []
        for i, (image, text) in enumerate(turns):
            parts += self.turn(image, text, i == 0, i == len(turns) - 1)
            if i < len(answers):
                parts.append(self.text(answers[i], bos=True))
        return torch.cat(parts, dim=1)

    @torch.no_grad()
    def greedy(self, embeds: torch.Tensor, n: int) -> list[int]:
        out = self.llm(inputs_embeds=embeds, use_cache=True)
        toks = []
        for _ in range(n):
            nxt = out.logits[:, -1].argmax(-1, keepdim=True)
            toks.append(int(nxt))
            out = self.llm(input_ids=nxt, past_key_values=out.past_key_values, use_cache=True)
        return toks


# -- fixture ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(our pipeline, the oracle, the checkpoint folder): one export, the model's Python planted first."""
    from vlmforge.export import export_model
    from vlmforge.export.tiny_internlm_xcomposer import make_tiny_internlm_xcomposer
    from vlmforge.runtime import Pipeline

    root = tmp_path_factory.mktemp("ixc1")
    seed = int(np.random.default_rng(7).integers(1 << 16))
    model_dir = make_tiny_internlm_xcomposer(root / "hf", seed, drawn_dims(seed))
    for name in PLANTED:
        (model_dir / name).write_text(f"open({str(root / 'ran.txt')!r}, 'w').write('executed')\n")
    export_model(model_dir, root / "out")
    return Pipeline.load(root / "out"), Oracle(model_dir), model_dir


def picture(seed: int, width: int, height: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    image = np.empty((height, width, 3), np.uint8)
    image[:] = rng.integers(0, 256, 3)
    for _ in range(4):
        x, y = rng.integers(0, width - 8), rng.integers(0, height - 8)
        image[y:y + rng.integers(8, height // 2 + 9), x:x + rng.integers(8, width // 2 + 9)] = rng.integers(0, 256, 3)
    return image


def user(*items):
    return {"role": "user", "content": [{"type": "image"} if i is None else {"type": "text", "text": i} for i in items]}


def session(pipe, name):
    import onnxruntime as ort

    return ort.InferenceSession(str(pipe.root / pipe.manifest.graphs[name].path), providers=["CPUExecutionProvider"])


# -- each graph against its module ------------------------------------------------------------------

def test_vision_and_connector_graphs_equal_the_composed_modules(tiny):
    pipe, oracle, _ = tiny
    pixels = torch.randn(3, 3, oracle.size, oracle.size, generator=torch.Generator().manual_seed(0))
    features = session(pipe, "vision").run(None, {"pixel_values": pixels.numpy()})[0]
    with torch.no_grad():
        ref = oracle.vision(pixel_values=pixels).last_hidden_state
    np.testing.assert_allclose(features, ref.numpy(), atol=1e-4, rtol=0)
    embeds = session(pipe, "connector").run(None, {"image_features": ref.numpy()})[0]
    np.testing.assert_allclose(embeds, oracle.connector(ref).numpy(), atol=1e-4, rtol=0)
    assert embeds.shape[1] == oracle.queries.shape[1] + 2 == pipe.manifest.image.preprocess.tokens_per_tile


def test_llm_graph_equals_the_llama_decoder(tiny):
    """Prefill, then a cached step: logits and the cache within 1e-4 of a Llama with attention biases."""
    pipe, oracle, _ = tiny
    llm, s = pipe.manifest.llm, session(pipe, "llm")
    embeds = torch.randn(1, 9, llm.hidden_size, generator=torch.Generator().manual_seed(1))
    names = [i.name for i in s.get_inputs() if i.name.startswith("past")]
    empty = [np.zeros((1, llm.num_kv_heads, 0, llm.head_dim), np.float32)] * len(names)
    feeds = {"inputs_embeds": embeds[:, :7].numpy(), "attention_mask": np.ones((1, 7), np.int64),
             "position_ids": np.arange(7)[None], **dict(zip(names, empty))}
    out = s.run(None, feeds)
    with torch.no_grad():
        ref = oracle.llm(inputs_embeds=embeds[:, :7], use_cache=True)
        step_ref = oracle.llm(inputs_embeds=embeds[:, 7:], past_key_values=ref.past_key_values, use_cache=True)
    np.testing.assert_allclose(out[0][0, -1], ref.logits[0, -1].numpy(), atol=1e-4, rtol=0)
    step = s.run(None, {"inputs_embeds": embeds[:, 7:].numpy(), "attention_mask": np.ones((1, 9), np.int64),
                        "position_ids": np.arange(7, 9)[None], **dict(zip(names, out[1:]))})
    np.testing.assert_allclose(step[0][0, -1], step_ref.logits[0, -1].numpy(), atol=1e-4, rtol=0)
    # concat layout: present = the whole cache; append: the step's new columns (the last two)
    tail = 2 if llm.cache_layout == "append" else 9
    for i, layer in enumerate(step_ref.past_key_values.layers):
        np.testing.assert_allclose(step[1 + 2 * i], layer.keys.numpy()[:, :, -tail:], atol=1e-4, rtol=0)
        np.testing.assert_allclose(step[2 + 2 * i], layer.values.numpy()[:, :, -tail:], atol=1e-4, rtol=0)


def test_image_embeddings_equal_encode_img(tiny):
    """Kernel pixels (224-style exact bicubic resize) → vision → connector == the oracle's encode_img."""
    from vlmforge.runtime.stats import StageTimer

    pipe, oracle, _ = tiny
    image = picture(3, 150, 70)
    np.testing.assert_allclose(pipe.encode_image(image, StageTimer()), oracle.encode_img(image)[0].numpy(),
                               atol=1e-4, rtol=0)


# -- greedy tokens ----------------------------------------------------------------------------------

def test_greedy_tokens_on_three_shapes_and_text_only(tiny):
    pipe, oracle, _ = tiny
    for seed, (w, h) in enumerate([(90, 60), (60, 130), (220, 50)]):
        image = picture(seed, w, h)
        ours = pipe.generate(messages=[user(None, "What is it?")], images=[image], max_new_tokens=24, ignore_eos=True)
        assert_same_tokens(ours.token_ids, oracle.greedy(oracle.prompt([(image, "What is it?")]), 24), 24, set())
    ours = pipe.generate(messages=[user("Describe a red circle.")], max_new_tokens=24, ignore_eos=True)
    assert_same_tokens(ours.token_ids, oracle.greedy(oracle.prompt([(None, "Describe a red circle.")]), 24), 24, set())


def test_two_pictures_come_as_chat_history(tiny):
    """The original takes one picture per turn: the second comes in a second turn after the first one's
    history (' <|User|>:' picture text ' <|Bot|>:', then the answer with its own BOS)."""
    pipe, oracle, _ = tiny
    first, second = picture(10, 80, 80), picture(11, 40, 100)
    messages = [user(None, "What is it?"), {"role": "assistant", "content": "a red star"}, user(None, "And this one?")]
    ours = pipe.generate(messages=messages, images=[first, second], max_new_tokens=24, ignore_eos=True)
    ref = oracle.prompt([(first, "What is it?"), (second, "And this one?")], answers=["a red star"])
    assert_same_tokens(ours.token_ids, oracle.greedy(ref, 24), 24, set())


def test_prompt_ids_are_the_segments_tokenised_apart(tiny):
    """The one-string prompt tokenises to what sentencepiece gives each wrap_prompt segment alone."""
    pipe, oracle, _ = tiny
    sp, slot = oracle.sp, pipe.manifest.image.image_token_id
    n = pipe.manifest.image.preprocess.tokens_per_tile
    for text in ("What is it?", "  two  spaces ", "", "a\nb"):
        prepared = pipe.prepare_prompt(None, [user(None, text)], 1, [n])
        want = [sp.bos_id()] + sp.encode(" <|User|>:") + [slot] * n + sp.encode(text) + sp.encode(f"\n{EOH} <|Bot|>:")
        assert prepared.input_ids.tolist() == want, repr(text)
        prepared = pipe.prepare_prompt(None, [user(text)], 0, [])
        want = [sp.bos_id()] + sp.encode(" <|User|>:") + sp.encode(text) + sp.encode(f"\n{EOH} <|Bot|>:")
        assert prepared.input_ids.tolist() == want, repr(text)


# -- the checkpoint's Python never runs; bad checkpoints get clear errors ---------------------------

def test_the_checkpoints_python_never_runs(tiny):
    pipe, _, model_dir = tiny
    assert all((model_dir / name).is_file() for name in PLANTED)
    pipe.generate(messages=[user(None, "hi")], images=[picture(0, 30, 30)], max_new_tokens=2)
    assert not (model_dir.parent / "ran.txt").exists()


def test_bad_checkpoints_are_refused_clearly(tiny, tmp_path):
    from safetensors.torch import load_file, save_file

    from vlmforge.export import export_model

    _, _, source = tiny
    model_dir = tmp_path / "hf"
    shutil.copytree(source, model_dir)
    config = json.loads((model_dir / "config.json").read_text())

    def refused(match):
        out = tmp_path / f"out{len(list(tmp_path.iterdir()))}"
        with pytest.raises(ValueError, match=match):
            export_model(model_dir, out)
        assert not out.exists()

    (model_dir / "config.json").write_text(json.dumps({**config, "architectures": ["InternLMForCausalLM"]}))
    refused("not InternLMXComposerForCausalLM")
    (model_dir / "config.json").write_text(json.dumps(config))
    weights = load_file(str(model_dir / "model.safetensors"))
    lora = {**weights, "internlm_model.model.layers.0.self_attn.q_proj.lora_A.weight": torch.zeros(8, config["hidden_size"])}
    save_file(lora, str(model_dir / "model.safetensors"))
    refused("LoRA branches in its InternLM")
    save_file({k: v for k, v in weights.items() if k != "flag_image_end"}, str(model_dir / "model.safetensors"))
    refused("flag_image_end should be")
    save_file({k: v for k, v in weights.items() if not k.startswith("Qformer.")}, str(model_dir / "model.safetensors"))
    refused("no perceive sampler")
