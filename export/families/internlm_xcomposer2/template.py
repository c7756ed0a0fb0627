"""InternLM-XComposer2's conversation format as a chat template: what ``interleav_wrap_chat``
builds.

Every turn is ``[UNUSED_TOKEN_146]{role}\\n{text}[UNUSED_TOKEN_145]\\n`` and the answer starts
after ``[UNUSED_TOKEN_146]assistant\\n``; no system turn unless one is given (``chat`` leaves its
meta instruction out by default). Images go where ``<ImageHere>`` stands, and a lone picture the
text does not place goes in front of everything — so one image is always first (messages cannot
place a lone picture: their image item is the picture, wherever it stands), several stand where
their items are. BOS comes from the tokenizer, before everything, as the original gives the
first part (empty when the image leads) the only BOS.
"""

from __future__ import annotations

IMAGE_TOKEN = "<ImageHere>"
BEGIN, END = "[UNUSED_TOKEN_146]", "[UNUSED_TOKEN_145]"


def chat_template() -> str:
    return (
        "{% set ns = namespace(images=0) %}"
        "{% for message in messages %}{% if message['content'] is not string %}"
        "{% for item in message['content'] %}{% if item['type'] == 'image' %}{% set ns.images = ns.images + 1 %}"
        "{% endif %}{% endfor %}{% endif %}{% endfor %}"
        "{% if ns.images == 1 %}{{ '" + IMAGE_TOKEN + "' }}{% endif %}"
        "{% for message in messages %}"
        "{{ '" + BEGIN + "' + message['role'] + '\\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}{% if ns.images > 1 %}{{ '" + IMAGE_TOKEN + "' }}{% endif %}"
        "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '" + END + "\\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '" + BEGIN + "assistant\\n' }}{% endif %}"
    )
