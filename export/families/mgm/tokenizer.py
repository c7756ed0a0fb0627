"""MGM's tokenizer: the checkpoint's own Llama tokenizer (fast form), with ``<image>`` added as a
special token after its vocabulary — the original splits the prompt at ``<image>`` and puts
IMAGE_TOKEN_INDEX (-200) there (``tokenizer_image_token``); here it is one id the runtime expands
into the picture's slots, whose embedding row is never read."""

from __future__ import annotations

from pathlib import Path

from ....runtime.manifest import TokenizerSpec
from ...tokenizer import tokenizer_json

IMAGE_TOKEN = "<image>"


def load_tokenizer(root: Path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True, use_fast=True, trust_remote_code=False)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"the tokenizer in {root} has no fast (tokenizer.json) form; the runtime uses the "
                         "'tokenizers' library — convert it with transformers first")
    if IMAGE_TOKEN in tokenizer.get_vocab():
        raise ValueError(f"the tokenizer in {root} already has a {IMAGE_TOKEN!r} token; MGM's prompt marks images "
                         "with that text, not a vocabulary token")
    tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return tokenizer


def tokenizer_files(root: Path, template: str) -> tuple[str, TokenizerSpec, int]:
    """(tokenizer.json text, its spec, the image token's id)."""
    tokenizer = load_tokenizer(root)
    text, special = tokenizer_json(tokenizer, IMAGE_TOKEN)
    eos = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    spec = TokenizerSpec(path="tokenizer.json", bos_token_id=tokenizer.bos_token_id, eos_token_ids=eos,
                         pad_token_id=tokenizer.pad_token_id, chat_template=template, special_tokens=special)
    return text, spec, int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
