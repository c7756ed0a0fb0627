"""CogVLM's tokenizer: the language model's own (v1: Vicuna-7B-v1.5's Llama tokenizer, which
``cogvlm-chat-hf`` does not ship; v2: the checkpoint's Llama-3 tokenizer), fast form, with ``<image>``
added as a special token after the vocabulary where it lacks one. The original fills the image's
slots with pad ids and replaces their embeddings; here ``<image>`` is the one id the runtime expands
into them, so its embedding row is never read. BOS is put first by the runtime (``prefix_ids``),
as ``build_conversation_input_ids`` does whatever the tokenizer's own post-processor would add."""

from __future__ import annotations

from pathlib import Path

from ....runtime.manifest import TokenizerSpec
from ...tokenizer import tokenizer_json
from .config import CogVLMConfig

IMAGE_TOKEN = "<image>"
V1_TOKENIZER = "lmsys/vicuna-7b-v1.5"  # what THUDM's cogvlm-chat-hf model card loads


def load_tokenizer(root: Path, c: CogVLMConfig):
    from transformers import AutoTokenizer

    if not any((root / name).is_file() for name in ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")):
        source = f"{V1_TOKENIZER}'s" if c.version == 1 else "the checkpoint's Llama-3"
        raise FileNotFoundError(f"{root} has no tokenizer (tokenizer.json / tokenizer.model); CogVLM uses {source} "
                                "tokenizer: copy its tokenizer files next to config.json")
    tokenizer = AutoTokenizer.from_pretrained(root, local_files_only=True, use_fast=True, trust_remote_code=False)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(f"the tokenizer in {root} has no fast (tokenizer.json) form; the runtime uses the "
                         "'tokenizers' library — convert it with transformers first")
    if IMAGE_TOKEN not in tokenizer.get_vocab():
        tokenizer.add_tokens([IMAGE_TOKEN], special_tokens=True)
    return tokenizer


def tokenizer_files(root: Path, c: CogVLMConfig, template: str | None) -> tuple[str, TokenizerSpec, int]:
    """(tokenizer.json text, its spec, the image token's id)."""
    tokenizer = load_tokenizer(root, c)
    text, special = tokenizer_json(tokenizer, IMAGE_TOKEN)
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else c.bos_token_id  # as the original
    eos = sorted(set(c.eos_token_ids) | ({tokenizer.eos_token_id} if tokenizer.eos_token_id is not None else set()))
    spec = TokenizerSpec(path="tokenizer.json", bos_token_id=bos, eos_token_ids=eos, pad_token_id=c.pad_token_id,
                         chat_template=template, special_tokens=special, add_special_tokens=False, prefix_ids=[bos])
    return text, spec, int(tokenizer.convert_tokens_to_ids(IMAGE_TOKEN))
