"""What the CogVLM v1 and CogVLM2 tests share: the original's inputs built from our prompt, and
the llm graph run on its own (tests/test_cogvlm.py, tests/test_cogvlm2.py)."""

from __future__ import annotations

import numpy as np
import torch

QUESTION = "What is in the picture?"


def oracle_prompt(pipe, messages, num_images: int, pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Our prompt ids as the original's ``build_conversation_input_ids`` lays them out: (input_ids,
    token_type_ids), each (1, seq) — the image's slots hold pad ids and token type 1."""
    n = pipe.manifest.image.preprocess.tokens_per_tile
    prepared = pipe.prompter.prepare_prompt(None, messages, num_images, [n] * num_images)
    ids, types = prepared.input_ids.copy(), np.zeros(len(prepared.input_ids), dtype=np.int64)
    for start, count in prepared.image_slots:
        ids[start : start + count], types[start : start + count] = pad_id, 1
    return torch.as_tensor(ids)[None], torch.as_tensor(types)[None]


SAT_NAMES = [  # SAT name pattern → the HF checkpoint's, {i} the layer
    ("mixins.eva.vit_model.mixins.patch_embedding.proj.", "model.vision.patch_embedding.proj."),
    ("mixins.eva.vit_model.transformer.word_embeddings.weight", "model.vision.patch_embedding.cls_embedding"),
    ("mixins.eva.vit_model.transformer.position_embeddings.", "model.vision.patch_embedding.position_embedding."),
    ("mixins.eva.vit_model.transformer.layers.{i}.mlp.dense_h_to_4h.", "model.vision.transformer.layers.{i}.mlp.fc1."),
    ("mixins.eva.vit_model.transformer.layers.{i}.mlp.dense_4h_to_h.", "model.vision.transformer.layers.{i}.mlp.fc2."),
    ("mixins.eva.vit_model.transformer.layers.{i}.", "model.vision.transformer.layers.{i}."),
    ("mixins.eva.", "model.vision."),
    ("mixins.encoder.", "model.cross_vision."),  # CogAgent's high-resolution tower: the same names below
    ("transformer.layers.{i}.cross_attention.", "model.layers.{i}.cross_attn."),
    ("mixins.mlp.gate_proj.{i}.", "model.layers.{i}.mlp.language_mlp.gate_proj."),
    ("mixins.mlp.vision_gate_proj.{i}.", "model.layers.{i}.mlp.vision_mlp.gate_proj."),
    ("mixins.mlp.vision_dense_h_to_4h_list.{i}.", "model.layers.{i}.mlp.vision_mlp.up_proj."),
    ("mixins.mlp.vision_dense_4h_to_h_list.{i}.", "model.layers.{i}.mlp.vision_mlp.down_proj."),
    ("mixins.rotary.vision_query_key_value_list.{i}.", "model.layers.{i}.self_attn.vision_expert_query_key_value."),
    ("mixins.rotary.vision_dense_list.{i}.", "model.layers.{i}.self_attn.vision_expert_dense."),
    ("transformer.layers.{i}.attention.query_key_value.", "model.layers.{i}.self_attn.language_expert_query_key_value."),
    ("transformer.layers.{i}.attention.dense.", "model.layers.{i}.self_attn.language_expert_dense."),
    ("transformer.layers.{i}.mlp.dense_h_to_4h.", "model.layers.{i}.mlp.language_mlp.up_proj."),
    ("transformer.layers.{i}.mlp.dense_4h_to_h.", "model.layers.{i}.mlp.language_mlp.down_proj."),
    ("transformer.layers.{i}.", "model.layers.{i}."),
    ("transformer.final_layernorm.", "model.norm."),
    ("transformer.word_embeddings.", "model.embed_tokens."),
    ("mixins.lm.lm_head.", "lm_head."),
]


def sat_to_hf(state: dict) -> dict:
    """The SAT checkpoint's tensors under the HF checkpoint's names (its rotary buffer dropped)."""
    import re

    out = {}
    for key, value in state.items():
        if key.endswith(("rotary_emb.inv_freq", "rope.freqs_cos", "rope.freqs_sin")):
            continue
        for sat, hf in SAT_NAMES:
            pattern = "^" + re.escape(sat).replace(r"\{i\}", r"(\d+)")
            m = re.match(pattern, key)
            if m:
                out[(hf.replace("{i}", m.group(1)) if m.groups() else hf) + key[m.end():]] = value
                break
        else:
            raise KeyError(f"no HF name for the SAT tensor {key}")
    return out


def sat_masks(types: torch.Tensor) -> dict[str, torch.Tensor]:
    """What the SAT text processor marks for an image span of token type 1 (1, seq): the embedded
    slots (boi, patches, eoi), the vision expert's (boi + patches) and the shared-position patches."""
    expert, rope = torch.zeros_like(types), torch.zeros_like(types)
    expert[:, :-1] = types[:, :-1] & types[:, 1:]  # eoi takes the language expert
    rope[:, 1:-1] = types[:, 1:-1] & types[:, :-2] & types[:, 2:]  # the patches between boi and eoi
    return {"vision_expert_mask": expert, "image_embed_mask": types.clone(), "image_rope_mask": rope}


def export_tiny(root, config: dict, state: dict):
    """The original-layout checkpoint of ``state`` under ``root/hf``, exported by us → our pipeline."""
    from vlmforge.export import export_model
    from vlmforge.export.tiny_cogvlm import make_tiny_cogvlm
    from vlmforge.runtime import Pipeline

    make_tiny_cogvlm(root / "hf", config, state)
    export_model(root / "hf", root / "out")
    return Pipeline.load(root / "out")


def llm_session(pipe):
    import onnxruntime as ort

    return ort.InferenceSession(str(pipe.root / pipe.manifest.graphs["llm"].path), providers=["CPUExecutionProvider"])


def run_llm(session, llm, embeds: np.ndarray, expert_mask: np.ndarray, positions: np.ndarray | None = None,
            **extra):
    """One prefill of ``embeds`` (1, s, d) on an empty cache → (logits (1, 1, vocab), presents);
    ``extra``: further inputs (CogAgent's cross K/V and memory mask)."""
    s = embeds.shape[1]
    feeds = {"inputs_embeds": embeds.astype(np.float32), "attention_mask": np.ones((1, s), np.int64),
             "position_ids": np.arange(s, dtype=np.int64)[None] if positions is None else positions,
             "expert_mask": expert_mask.astype(np.float32)}
    for i in range(llm.num_layers):
        for kind in ("key", "value"):
            feeds[f"past_key_values.{i}.{kind}"] = np.zeros((1, llm.num_kv_heads, 0, llm.head_dim), np.float32)
    logits, *presents = session.run(None, {**feeds, **extra})
    return logits, presents
