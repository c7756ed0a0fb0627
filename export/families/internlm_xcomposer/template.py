"""InternLM-XComposer (v1)'s conversation format (``wrap_prompt`` / ``chat`` of the published
``modeling_InternLM_XComposer.py``) as a chat template.

A turn is ``' <|User|>:'``, the turn's picture (66 embeddings: ``flag_image_start``, 64 queries,
``flag_image_end``), the text, then ``'\\n<TOKENS_UNUSED_0> <|Bot|>:'`` (eoh, end of human); the
answer ends at ``<TOKENS_UNUSED_1>`` (eoa) or ``</s>``. The original takes one picture per turn,
always before the text; a second picture comes with a second turn, after the first as ``chat``
keeps it in ``history``: ``' <|User|>:'`` picture text ``' <|Bot|>:'`` (no eoh), then the answer
re-tokenised with its own BOS. A system message is the chat checkpoint's ``meta_instruction``,
written in front of the first ``' <|User|>:'``.

The original tokenises every segment on its own (BOS on the first only), so sentencepiece's dummy
prefix "▁" starts each one. Here the prompt is one string: a segment after a picture or BOS is split
off by that special token (the converted tokenizer normalises each split on its own, so it gets its
"▁"), and one that follows text gets ``SEP`` (a space) in front — with sentencepiece's whitespace
splitting the same pieces as a fresh segment's "▁" (``sep`` is "" for a model without dummy prefix).
"""

from __future__ import annotations

IMAGE_TOKEN = "<ImageHere>"
EOH, EOA = "<TOKENS_UNUSED_0>", "<TOKENS_UNUSED_1>"
USER, BOT = " <|User|>:", " <|Bot|>:"


def chat_template(sep: str, bos: str) -> str:
    """``sep``: what stands between two text segments the original tokenises apart; ``bos``: the
    BOS piece every history turn but the first and every history answer start with (the first
    BOS is the tokenizer's). System messages have no place (the VL checkpoint's chat has none)."""
    s = "'" + sep + "'"
    return (
        "{% for message in messages %}"
        "{% if message['role'] == 'user' %}"
        "{% set ns = namespace(text='', images=0) %}"
        "{% if message['content'] is string %}{% set ns.text = message['content'] %}"
        "{% else %}{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}{% set ns.images = ns.images + 1 %}"
        "{% elif item['type'] == 'text' %}{% set ns.text = ns.text + item['text'] %}{% endif %}"
        "{% endfor %}{% endif %}"
        "{% if not loop.first %}{{ '" + bos + "' if not loop.last else " + s + " }}{% endif %}"
        "{{ '" + USER + "' }}"
        "{% if ns.images %}{{ '" + IMAGE_TOKEN + "' * ns.images + ns.text }}"
        "{% elif ns.text %}{{ " + s + " + ns.text }}{% endif %}"
        "{% if ns.text or not ns.images %}{{ " + s + " }}{% endif %}"
        "{{ '\\n" + EOH + BOT + "' if loop.last else '" + BOT + "' }}"
        "{% elif message['role'] == 'assistant' %}{{ '" + bos + "' + message['content'] }}"
        "{% endif %}"
        "{% endfor %}"
    )
