"""Shared parity runners: a vlmforge export against the transformers model it came from."""

from __future__ import annotations

import numpy as np
import torch


def hf_generate(model, input_ids: np.ndarray, pixel_values: np.ndarray | None, max_new_tokens: int) -> list[int]:
    """Greedy transformers generate; returns the new token ids."""
    ids = torch.as_tensor(input_ids)[None]
    kwargs = {"pixel_values": torch.as_tensor(pixel_values)} if pixel_values is not None else {}
    with torch.no_grad():
        out = model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=max_new_tokens,
            do_sample=False,
            **kwargs,
        )
    return out[0, ids.shape[1] :].tolist()


def assert_same_tokens(ours: list[int], theirs: list[int], min_tokens: int, eos: set[int]):
    assert ours == theirs, f"token mismatch\n ours:   {ours}\n theirs: {theirs}"
    assert len(ours) >= min_tokens or (ours and ours[-1] in eos), f"only {len(ours)} tokens compared"


def hf_generate_ids(model, max_new_tokens: int, **inputs) -> list[int]:
    """Greedy transformers generate from prepared torch inputs; returns the new token ids only.

    Decoder-only models return prompt + new ids, encoder-decoder ones start + new ids."""
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    if getattr(model.config, "text_config", model.config).is_encoder_decoder:
        return out[0, 1:].tolist()  # drop the decoder start token
    return out[0, inputs["input_ids"].shape[1] :].tolist()


def stepwise_logits(pipe, request, steps: int, chunk: int) -> tuple[list[int], list[np.ndarray]]:
    """The runtime's own verbs on one request: prefill in ``chunk``-token steps, then ``steps``
    greedy decode steps. Returns (prompt ids, the logits (vocab,) before each new token)."""
    from vlmforge.runtime.decode import decode_one_token, prefill
    from vlmforge.runtime.stats import StageTimer

    timer = StageTimer()
    p = pipe.prepare(request, timer)
    pipe.decoder.reset()
    logits = [np.array(prefill(pipe.decoder, p.inputs_embeds, timer, p.positions, p.feeds, chunk))]
    for _ in range(steps):
        token = int(np.argmax(logits[-1]))
        logits.append(np.array(decode_one_token(pipe.decoder, pipe.embed_table, token, timer, p.positions, p.feeds)))
    return p.input_ids.tolist(), logits


def assert_logits_every_step(ours: list[np.ndarray], forward, prompt_ids: list[int], atol: float = 1e-4):
    """``forward(ids)`` → the reference's last-position logits on the whole sequence (no cache):
    each of our steps, fed the greedy tokens so far, within ``atol`` of it."""
    ids = list(prompt_ids)
    for k, got in enumerate(ours):
        want = forward(ids)
        err = float(np.abs(got - want).max())
        assert err < atol, f"step {k} (sequence of {len(ids)}): logits differ by {err:.2e}"
        ids.append(int(np.argmax(got)))


def assert_same_until_eos(ours: list[int], theirs: list[int], min_tokens: int, eos: set[int]):
    """An original's greedy loop runs past EOS where we stop: compare up to its first EOS."""
    cut = next((i + 1 for i, t in enumerate(theirs) if t in eos), len(theirs))
    assert_same_tokens(ours, theirs[:cut], min(min_tokens, cut), eos)


def user(*items) -> list[dict]:
    """One user turn: None is a picture, a string a text item."""
    return [{"role": "user", "content": [{"type": "image"} if i is None else {"type": "text", "text": i} for i in items]}]


def assert_cached_step_equals_forward(pipe, language_model, lm_head, hidden: int, atol: float = 1e-4):
    """The llm graph: a 9-token prefill of random embeddings, then one cached step, against one
    10-token forward of the transformers text model."""
    inputs = np.random.default_rng(1).standard_normal((1, 10, hidden)).astype(np.float32)
    pipe.decoder.reset()
    pipe.decoder.step(inputs[:, :9], np.arange(9)[None])
    logits = np.array(pipe.decoder.step(inputs[:, 9:], np.array([[9]])))
    with torch.no_grad():
        out = language_model(inputs_embeds=torch.as_tensor(inputs))
        want = lm_head(out.last_hidden_state)[0, -1].numpy()
    assert np.abs(logits - want).max() < atol


def assert_batched_and_chat_equal_solo(pipe, requests, chat_images):
    """``requests`` decoded together give their solo tokens, and a chat's second turn (the first about
    ``chat_images``) gives the tokens of the whole conversation run cold; returns that turn's result."""
    solo = [pipe.generate(**r.kwargs()).token_ids for r in requests]
    assert [r.token_ids for r in pipe.generate_batch(requests)] == solo
    chat = pipe.chat()
    chat.send("Look.", images=chat_images, max_new_tokens=6)
    second = chat.send("And now?", max_new_tokens=8)
    fresh = pipe.generate(messages=chat.messages[:-1], images=chat_images, max_new_tokens=8)
    assert second.token_ids == fresh.token_ids
    return second
