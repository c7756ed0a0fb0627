"""``qwen.tiktoken`` (tiktoken BPE ranks) → a ``tokenizer.json`` the ``tokenizers`` library runs
with the same ids, without tiktoken or the checkpoint's ``tokenization_qwen.py``.

tiktoken's BPE merges, inside each regex piece, the adjacent pair whose concatenation has the
lowest rank, and a piece that is itself a token is one token. The same in ``tokenizers``: a
byte-level BPE whose merges list, at each token's rank, every split of it into two tokens
(transformers' TikTokenConverter does the same), with ``ignore_merges`` for whole pieces. The
special tokens follow the ranks in the original's order; the prompt is NFC-normalised first, as
``QWenTokenizer.tokenize`` does.
"""

from __future__ import annotations

import base64
import binascii
import json
from pathlib import Path

# tokenization_qwen.py's PAT_STR and special tokens, in id order after the ranks
PATTERN = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"""
           r"""|\s+(?!\S)|\s+""")
CONTROL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>") + tuple(f"<|extra_{i}|>" for i in range(205))
# ref / box / quad marks stay in decoded answers (grounding reads them); image marks do not
VISIBLE = ("<ref>", "</ref>", "<box>", "</box>", "<quad>", "</quad>")
IMAGE_MARKS = ("<img>", "</img>", "<imgpad>")
SPECIALS = CONTROL + VISIBLE + IMAGE_MARKS


def read_ranks(path: Path) -> dict[bytes, int]:
    """``base64(token) rank`` per line → {token bytes: rank}; a clear error for anything else."""
    ranks: dict[bytes, int] = {}
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            token, rank = line.split()
            ranks[base64.b64decode(token, validate=True)] = int(rank)
        except (ValueError, binascii.Error):
            raise ValueError(f"{path} line {number} is not 'base64-token rank': {line[:60]!r}; the file is not a "
                             "tiktoken BPE vocabulary") from None
    if sorted(ranks.values()) != list(range(len(ranks))):
        raise ValueError(f"{path}: ranks must be 0 … {len(ranks) - 1} with none missing or repeated")
    missing = [b for b in range(256) if bytes([b]) not in ranks]
    if missing:
        raise ValueError(f"{path} lacks {len(missing)} single-byte tokens (e.g. {bytes([missing[0]])!r}); "
                         "a byte-level BPE vocabulary needs all 256")
    return ranks


def _byte_chars() -> dict[int, str]:
    """GPT-2's byte → printable character map (what ByteLevel pre-tokenisation produces)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = dict(zip(keep, keep)), 0
    for b in range(256):
        if b not in chars:
            chars[b] = 256 + extra
            extra += 1
    return {b: chr(c) for b, c in chars.items()}


def _merges(ranks: dict[bytes, int], show) -> list[list[str]]:
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda kv: kv[1]):
        for cut in range(1, len(token)):
            left, right = token[:cut], token[cut:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], ranks[right], show(left), show(right)))
    merges.sort()
    return [[left, right] for *_, left, right in merges]


def tokenizer_json(ranks: dict[bytes, int]) -> str:
    """The ``tokenizers`` JSON: ids = tiktoken ranks, then ``SPECIALS`` from len(ranks)."""
    chars = _byte_chars()

    def show(token: bytes) -> str:
        return "".join(chars[b] for b in token)

    first = len(ranks)
    added = [{"id": first + i, "content": t, "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": t not in VISIBLE} for i, t in enumerate(SPECIALS)]
    data = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": {"type": "NFC"},
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": PATTERN}, "behavior": "Isolated", "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        ]},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": False, "use_regex": False},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {show(t): r for t, r in ranks.items()}, "merges": _merges(ranks, show)},
    }
    return json.dumps(data, ensure_ascii=False)


def special_ids(num_ranks: int) -> dict[str, int]:
    return {t: num_ranks + i for i, t in enumerate(SPECIALS)}
