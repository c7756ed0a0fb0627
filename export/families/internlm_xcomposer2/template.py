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


# IXC2-VL's chat() default meta_instruction (its system turn unless the messages bring their own)
VL_META = (
    "You are an AI assistant whose name is InternLM-XComposer (浦语·灵笔).\n"
    "- InternLM-XComposer (浦语·灵笔) is a multi-modality conversational language model that is developed by "
    "Shanghai AI Laboratory (上海人工智能实验室). It is designed to be helpful, honest, and harmless.\n"
    "- InternLM-XComposer (浦语·灵笔) can understand and communicate fluently in the language chosen by the user "
    "such as English and 中文.\n"
    "- InternLM-XComposer (浦语·灵笔) is capable of comprehending and articulating responses effectively based on "
    "the provided image."
)


def _literal(text: str) -> str:
    """``text`` as a single-quoted Jinja string literal."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def vl_chat_template(bos: str) -> str:
    """The IXC2-era chat() (IXC2-VL, IXC2-4KHD): the system turn (VL_META by default; an empty system message drops it).
    With pictures (interleav_wrap_chat) each text part between them is tokenised on its own with
    BOS — the tokenizer's BOS is the first part's, ``bos`` follows every picture whose next part
    has text — and a picture stands where its item is (no auto-placement). Without pictures
    (build_inputs) the prompt text starts with ``bos`` and the tokenizer adds its own before it."""
    return (
        "{% set ns = namespace(images=0) %}"
        "{% for message in messages %}{% if message['content'] is not string %}"
        "{% for item in message['content'] %}{% if item['type'] == 'image' %}{% set ns.images = ns.images + 1 %}"
        "{% endif %}{% endfor %}{% endif %}{% endfor %}"
        "{% if ns.images == 0 %}{{ " + _literal(bos) + " }}{% endif %}"
        "{% if not messages or messages[0]['role'] != 'system' %}"
        "{{ " + _literal(BEGIN + "system\n" + VL_META + END + "\n") + " }}{% endif %}"
        "{% for message in messages %}"
        "{% if not (message['role'] == 'system' and not message['content']) %}"
        "{{ '" + BEGIN + "' + message['role'] + '\\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}{{ '" + IMAGE_TOKEN + "' }}"
        "{% if loop.last or loop.nextitem['type'] != 'image' %}{{ " + _literal(bos) + " }}{% endif %}"
        "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '" + END + "\\n' }}"
        "{% endif %}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '" + BEGIN + "assistant\\n' }}{% endif %}"
    )
