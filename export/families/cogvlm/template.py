"""The CogVLM lineage's conversation formats as chat templates: what the originals'
``_history_to_prompt`` build. The image goes first, right after BOS, wherever the user put it
(``build_conversation_input_ids`` lays out bos + image + text). A format is the text before the
first turn, then each user and assistant turn around its text; ``last_turn_only``: the history is
dropped (the vqa formats are single-round). The "base" formats are the raw query: no template.

CogVLM / CogVLM2: chat ``Question: {q} Answer: {a}\\n…Question: {q} Answer:``, vqa with
``Short answer:``. CogAgent (its HF code): chat ``" [INST] {q} [/INST] {a} [INST] …"``, chat_old and
vqa as CogVLM's after the literal text ``<EOI>`` (the HF code keeps the SAT original's image mark
as text)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Format:
    start: str
    user: str  # holds {q}
    assistant: str  # holds {a}
    last_turn_only: bool = False


COGVLM = {"chat": Format("", "Question: {q} Answer:", " {a}\n"),
          "vqa": Format("", "Question: {q} Short answer:", " {a}\n")}
COGAGENT = {"chat": Format(" [INST] ", "{q} [/INST] ", "{a} [INST] "),
            "chat_old": Format("<EOI>", "Question: {q} Answer:", " {a}\n"),
            "vqa": Format("<EOI>", "Question: {q} Short answer:", " {a}\n", last_turn_only=True)}


def _jinja(text: str) -> str:
    return text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n")


def _piece(template: str, slot: str) -> str:
    """'Question: {q} Answer:' → a Jinja expression with ns.text in the slot."""
    before, after = template.split(slot)
    return f"'{_jinja(before)}' + ns.text + '{_jinja(after)}'"


def chat_template(fmt: Format | None, image_token: str) -> str | None:
    if fmt is None:
        return None
    skip = "{%- if not loop.last -%}{%- continue -%}{%- endif -%}" if fmt.last_turn_only else ""
    return (
        "{%- set ns = namespace(images=0, text='') -%}"
        "{%- for message in messages -%}{%- if message['content'] is not string -%}"
        "{%- for item in message['content'] -%}{%- if item['type'] == 'image' -%}"
        "{%- set ns.images = ns.images + 1 -%}{%- endif -%}{%- endfor -%}{%- endif -%}{%- endfor -%}"
        "{{- '" + image_token + "' * ns.images -}}"
        "{{- '" + _jinja(fmt.start) + "' -}}"
        "{%- for message in messages -%}"
        "{%- if message['role'] not in ('user', 'assistant') -%}"
        "{{- raise_exception('this model\\'s conversations have user and assistant turns only, not ' + message['role']) -}}"
        "{%- endif -%}" + skip +
        "{%- set ns.text = '' -%}"
        "{%- if message['content'] is string -%}{%- set ns.text = message['content'] -%}"
        "{%- else -%}{%- for item in message['content'] -%}{%- if item['type'] == 'text' -%}"
        "{%- set ns.text = ns.text + item['text'] -%}{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{%- if message['role'] == 'user' -%}{{- " + _piece(fmt.user, "{q}") + " -}}"
        "{%- else -%}{{- " + _piece(fmt.assistant, "{a}") + " -}}{%- endif -%}"
        "{%- endfor -%}"
    )
