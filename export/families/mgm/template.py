"""MGM's conversation format (``conv_vicuna_v1``, what mgm/serve/cli.py uses for the Llama models)
as a chat template: "<system> USER: <message> ASSISTANT:", an assistant turn closed by "</s>".
Each image item is ``<image>\\n``; with two or more images in the prompt each is preceded by
``Image N:`` (cli.py's "image split string"), counted across the conversation."""

from __future__ import annotations

SYSTEM = ("A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
          "detailed, and polite answers to the user's questions.")


def chat_template(image_token: str) -> str:
    image = "{% if ns.total > 1 %}{{ 'Image ' + ns.seen|string + ':' }}{% endif %}{{ '" + image_token + "\\n' }}"
    return (
        "{% set ns = namespace(total=0, seen=0) %}"
        "{% for message in messages %}{% if message['content'] is not string %}{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}{% set ns.total = ns.total + 1 %}{% endif %}"
        "{% endfor %}{% endif %}{% endfor %}"
        "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + ' ' }}"
        "{% else %}{{ '" + SYSTEM.replace("'", "\\'") + " ' }}{% endif %}"
        "{% for message in messages %}{% if message['role'] != 'system' %}"
        "{{ ('USER' if message['role'] == 'user' else 'ASSISTANT') + ': ' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}{% set ns.seen = ns.seen + 1 %}" + image +
        "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ ' ' if message['role'] == 'user' else '</s>' }}"
        "{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'ASSISTANT:' }}{% endif %}"
    )
