"""VILA's tokenizer, as ``build_llm_and_tokenizer`` prepares it: ``llm/``'s own (fast), with the media
tokens added as special tokens where it lacks them, and the stop tokens ``infer_stop_tokens``
derives from its chat template.

Prompts: ``extract_media`` writes each picture of a message as ``<image>`` in its text (nothing
around it), ``tokenize_conversation`` strips every message and renders the tokenizer's chat
template over plain-string contents; the chat template exported here does exactly that to the
runtime's ``{"type": "image"}`` / ``{"type": "text"}`` items before the checkpoint's template runs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

from ....runtime.manifest import TokenizerSpec
from ...tokenizer import tokenizer_json

IMAGE_TOKEN = "<image>"
MEDIA_TOKENS = ("<image>", "<vila/video>")  # llava/constants.py MEDIA_TOKENS, added in this order
SENTINEL = "<vila/sentinel>"
END_TOKENS = "\n"  # BasicImageEncoder's end_tokens: embedded after every image

# message contents → one string per message, stripped, pictures as <image> (then the original template)
FLATTEN = (
    "{%- set vila = namespace(messages=[]) -%}"
    "{%- for m in messages -%}"
    "{%- set part = namespace(text='') -%}"
    "{%- if m['content'] is string -%}{%- set part.text = m['content'] -%}"
    "{%- else -%}{%- for item in m['content'] -%}"
    "{%- if item['type'] == 'image' -%}{%- set part.text = part.text + '" + IMAGE_TOKEN + "' -%}"
    "{%- elif item['type'] == 'text' -%}{%- set part.text = part.text + item['text'] -%}{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- set vila.messages = vila.messages + [{'role': m['role'], 'content': part.text | trim}] -%}"
    "{%- endfor -%}"
    "{%- set messages = vila.messages %}"
)


def load_tokenizer(llm_dir: Path):
    """``llm/``'s tokenizer with the media tokens (added as VILA's builder adds them)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(llm_dir, local_files_only=True, padding_side="right", use_fast=True,
                                              legacy=False, trust_remote_code=False)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"the tokenizer in {llm_dir} has no fast (tokenizer.json) form; the runtime uses the "
                         "'tokenizers' library — convert it with transformers first")
    tokenizer.add_tokens(list(MEDIA_TOKENS), special_tokens=True)
    return tokenizer


def chat_template(tokenizer, raw: dict) -> str | None:
    """The tokenizer's template behind the flattening prefix; None where it has none."""
    if raw.get("chat_template"):
        raise ValueError(f"config.json names VILA's chat template {raw['chat_template']!r}, a file of VILA's package "
                         "(llava/model/language_model/chat_templates/), not of the checkpoint; put that template's "
                         "text into llm/tokenizer_config.json as chat_template and drop the key from config.json")
    template = getattr(tokenizer, "chat_template", None)
    return FLATTEN + template if template else None


def stop_token_ids(tokenizer) -> list[int]:
    """EOS and each token that follows an answer in the template (``infer_stop_tokens``)."""
    stops = {tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()
    if not getattr(tokenizer, "chat_template", None):
        return sorted(stops)
    probe = copy.deepcopy(tokenizer)
    probe.add_tokens([SENTINEL], special_tokens=True)
    sentinel = probe.convert_tokens_to_ids(SENTINEL)
    turns = [{"role": "user", "content": "question"}, {"role": "assistant", "content": SENTINEL}] * 10
    ids = probe(probe.apply_chat_template(turns, tokenize=False)).input_ids
    stops |= {ids[k + 1] for k in range(len(ids) - 1) if ids[k] == sentinel}
    return sorted(int(i) for i in stops)


def eos_ids(root: Path, tokenizer) -> list[int]:
    """The top folder's generation_config.json eos_token_id where it sets one, else the stop tokens
    (``default_generation_config``)."""
    path = root / "generation_config.json"
    eos = json.loads(path.read_text()).get("eos_token_id") if path.is_file() else None
    if eos is None:
        return stop_token_ids(tokenizer)
    return sorted({int(i) for i in (eos if isinstance(eos, list) else [eos])})


def tokenizer_files(root: Path, tokenizer, raw: dict) -> tuple[str, TokenizerSpec]:
    """(tokenizer.json text, its spec) for the manifest."""
    text, special = tokenizer_json(tokenizer, IMAGE_TOKEN)
    return text, TokenizerSpec(path="tokenizer.json", bos_token_id=tokenizer.bos_token_id,
                               eos_token_ids=eos_ids(root, tokenizer), pad_token_id=tokenizer.pad_token_id,
                               chat_template=chat_template(tokenizer, raw), special_tokens=special)


def end_token_ids(tokenizer) -> list[int]:
    """``tokenizer("\\n").input_ids``: what BasicImageEncoder embeds after each image (BOS included
    where the tokenizer adds one, as the original does)."""
    return list(tokenizer(END_TOKENS).input_ids)
