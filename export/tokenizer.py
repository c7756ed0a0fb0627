"""Tokenizer artifacts: ``tokenizer.json`` for the ``tokenizers`` runtime, the chat template,
and the special token ids the decode loop needs."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from ..runtime.manifest import TokenizerSpec


def _chat_template(model_dir: Path, tokenizer) -> str | None:
    template = getattr(tokenizer, "chat_template", None)
    if template:
        return template
    for name in ("chat_template.jinja", "chat_template.json", "processor_config.json"):
        path = model_dir / name
        if not path.is_file():
            continue
        if name.endswith(".jinja"):
            return path.read_text()
        value = json.loads(path.read_text()).get("chat_template")
        if value:
            return value
    return None


def _eos_ids(model_dir: Path, tokenizer) -> list[int]:
    ids: list[int] = []
    gen = model_dir / "generation_config.json"
    if gen.is_file():
        eos = json.loads(gen.read_text()).get("eos_token_id")
        ids += eos if isinstance(eos, list) else ([eos] if eos is not None else [])
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    return sorted(set(int(i) for i in ids))


def tokenizer_json(tokenizer, image_token: str) -> tuple[str, dict]:
    """A transformers fast tokenizer → (its tokenizer.json text, the manifest's special tokens by name)."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        text = (Path(tmp) / "tokenizer.json").read_text()
    special = {name: getattr(tokenizer, name) for name in ("bos_token", "eos_token", "pad_token", "unk_token")
               if getattr(tokenizer, name, None)}
    special["image_token"] = image_token
    return text, special


def export_tokenizer(model_dir: Path, out_dir: Path, image_token: str, image_token_id: int) -> TokenizerSpec:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            f"the tokenizer in {model_dir} has no fast (tokenizer.json) form; the runtime uses the "
            "'tokenizers' library — convert it with transformers first"
        )
    got = tokenizer.convert_tokens_to_ids(image_token) if image_token else image_token_id
    if got != image_token_id:
        raise ValueError(
            f"the tokenizer maps {image_token!r} to id {got} but the model config says {image_token_id}; "
            "the checkpoint's tokenizer and config do not belong together"
        )
    text, special = tokenizer_json(tokenizer, image_token)
    (out_dir / "tokenizer.json").write_text(text)
    return TokenizerSpec(
        path="tokenizer.json",
        bos_token_id=tokenizer.bos_token_id,
        eos_token_ids=_eos_ids(model_dir, tokenizer),
        pad_token_id=tokenizer.pad_token_id,
        chat_template=_chat_template(model_dir, tokenizer),
        special_tokens=special,
    )
