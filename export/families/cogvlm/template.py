"""CogVLM's conversation format as a chat template: what its ``_history_to_prompt`` builds. The
image goes first, right after BOS, wherever the user put it (``build_conversation_input_ids``
lays out bos + image + text); each earlier turn is ``Question: {q} Answer: {a}\\n`` and the last
``Question: {q} Answer:`` — ``Short answer:`` for the vqa template. The base template
(``template_version: "base"``) is the raw query, so it has no chat template at all."""

from __future__ import annotations

ANSWERS = {"chat": "Answer:", "vqa": "Short answer:"}


def chat_template(template_version: str, image_token: str) -> str | None:
    answer = ANSWERS.get(template_version)
    if answer is None:
        return None
    return (
        "{%- set ns = namespace(images=0) -%}"
        "{%- for message in messages -%}{%- if message['content'] is not string -%}"
        "{%- for item in message['content'] -%}{%- if item['type'] == 'image' -%}"
        "{%- set ns.images = ns.images + 1 -%}{%- endif -%}{%- endfor -%}{%- endif -%}{%- endfor -%}"
        "{{- '" + image_token + "' * ns.images -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] not in ('user', 'assistant') -%}"
        "{{- raise_exception('CogVLM conversations have user and assistant turns only, not ' + message['role']) -}}"
        "{%- endif -%}"
        "{%- set ns.text = '' -%}"
        "{%- if message['content'] is string -%}{%- set ns.text = message['content'] -%}"
        "{%- else -%}{%- for item in message['content'] -%}{%- if item['type'] == 'text' -%}"
        "{%- set ns.text = ns.text + item['text'] -%}{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{%- if message['role'] == 'user' -%}{{- 'Question: ' + ns.text + ' " + answer + "' -}}"
        "{%- else -%}{{- ' ' + ns.text + '\\n' -}}{%- endif -%}"
        "{%- endfor -%}"
    )
