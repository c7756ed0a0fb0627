"""Qwen-VL-Chat's conversation format as a chat template: what its ``make_context`` (ChatML) and
``from_list_format`` build. The default system turn is "You are a helpful assistant."; every
image item is ``Picture N:<img></img>`` and a newline, numbered across the conversation."""

from __future__ import annotations

DEFAULT_SYSTEM = "You are a helpful assistant."


def chat_template() -> str:
    return (
        "{% set ns = namespace(pictures=0) %}"
        "{% if messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>' }}"
        "{% endif %}"
        "{% for message in messages %}"
        "{% if loop.first and message['role'] == 'system' %}{{ '<|im_start|>system\\n' }}"
        "{% else %}{{ '\\n<|im_start|>' + message['role'] + '\\n' }}{% endif %}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}{% set ns.pictures = ns.pictures + 1 %}"
        "{{ 'Picture ' + ns.pictures|string + ':<img></img>\\n' }}"
        "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<|im_end|>' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '\\n<|im_start|>assistant\\n' }}{% endif %}"
    )
