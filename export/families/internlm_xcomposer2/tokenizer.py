"""InternLM2's SentencePiece BPE ``tokenizer.model`` → a ``tokenizer.json`` the ``tokenizers``
library runs with the same ids as the original ``InternLM2Tokenizer`` (a transformers slow
tokenizer over ``sentencepiece``), without either at run time.

What the original does, and where it lands here:

- the slow tokenizer splits the text on its added tokens (``<unk>``, ``<s>``, ``</s>``) and hands
  each chunk to ``sp.encode`` → special added tokens, so each chunk is normalised on its own;
- sentencepiece normalises a chunk (the precompiled charsmap, ``remove_extra_whitespaces``: no
  leading / trailing spaces, runs of spaces as one; ``add_dummy_prefix``: "▁" in front; spaces as
  "▁") → the normalizer, in that order;
- user-defined pieces (``[UNUSED_TOKEN_146]`` …) are matched in the normalised text and never
  merged → a Split pre-tokenizer isolates them and the BPE model looks whole words up first
  (``ignore_merges``), so a user-defined piece is its id;
- BPE merges the adjacent pair whose concatenation is the best-scored piece, leftmost first →
  ``merges`` listing every split of each piece in score order; unknown characters become
  ``<0xNN>`` byte pieces (``byte_fallback``);
- ``add_bos_token``: ``<s>`` first → the post-processor.

Looking whole words up is exact only for pieces sentencepiece produces from their own text; a
piece it never produces (its merges get stuck on the way) is stored under a key no text reaches
(the piece + U+FFFF, removed again when decoding).

Known differences, both on text no prompt holds: a run between two user-defined pieces (or
between one and a chunk's edge) that is exactly a byte piece's name, ``<0x41>``, is that byte
token here (sentencepiece spells it out); and with a precompiled charsmap (``nmt_nfkc``) the
``tokenizers`` normaliser rewrites a grapheme of under 6 bytes by the charsmap entry of its
*shortest* prefix, dropping the rest (sentencepiece takes the longest match and goes on), which
shows on combining marks after a character the charsmap rewrites.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from .sp_model import BPE, NORMAL, USER_DEFINED, SentencePieceError, SpModel, read_model

UNREACHABLE_MARK = "\uffff"  # a noncharacter: text never holds it


def check_model(m: SpModel, path: Path) -> None:
    if m.model_type != BPE:
        raise SentencePieceError(f"{path} is a SentencePiece model of type {m.model_type}, not BPE (2); "
                                 "InternLM2's tokenizer is BPE — is this the checkpoint's tokenizer.model?")
    if m.treat_whitespace_as_suffix:
        raise SentencePieceError(f"{path} treats whitespace as a suffix; InternLM2's tokenizer does not, and this "
                                 "conversion does not support it")
    ids = {"unk_id": m.unk_id, "bos_id": m.bos_id, "eos_id": m.eos_id}
    if not all(0 <= i < len(m.pieces) for i in ids.values()):
        raise SentencePieceError(f"{path} has no unknown, begin and end pieces ({ids}); InternLM2's tokenizer has "
                                 "<unk>, <s> and </s> — is this the checkpoint's tokenizer.model?")


def sp_bpe(text: str, scores: dict[str, float]) -> list[str]:
    """sentencepiece's BPE on one run of text (no user-defined pieces): merge the adjacent pair
    whose concatenation is the best-scored piece, the leftmost on ties, until none is a piece."""
    symbols = list(text)
    while True:
        best, at = None, -1
        for i in range(len(symbols) - 1):
            score = scores.get(symbols[i] + symbols[i + 1])
            if score is not None and (best is None or score > best):
                best, at = score, i
        if best is None:
            return symbols
        symbols[at : at + 2] = [symbols[at] + symbols[at + 1]]


def bpe_merges(m: SpModel) -> list[tuple[str, str]]:
    """Every split of every normal piece into two normal pieces, best-scored pieces first."""
    normal = {p.piece for p in m.pieces if p.type == NORMAL}
    order = sorted((i for i, p in enumerate(m.pieces) if p.type == NORMAL), key=lambda i: (-m.pieces[i].score, i))
    merges = []
    for i in order:
        piece = m.pieces[i].piece
        merges += [(piece[:cut], piece[cut:]) for cut in range(1, len(piece))
                   if piece[:cut] in normal and piece[cut:] in normal]
    return merges


def unreachable(m: SpModel) -> set[int]:
    """Ids of normal pieces sentencepiece never produces: its BPE on the piece's own text ends elsewhere."""
    scores = {p.piece: p.score for p in m.pieces if p.type == NORMAL}
    return {i for i, p in enumerate(m.pieces) if p.type == NORMAL and len(p.piece) > 1
            and sp_bpe(p.piece, scores) != [p.piece]}


def _normalizer(m: SpModel):
    from tokenizers import Regex, normalizers

    steps = [normalizers.Precompiled(m.precompiled_charsmap)] if m.precompiled_charsmap else []
    if m.remove_extra_whitespaces:
        steps += [normalizers.Replace(Regex(" {2,}"), " "), normalizers.Replace(Regex(r"\A +"), ""),
                  normalizers.Replace(Regex(r" +\z"), "")]
    if m.add_dummy_prefix:
        steps.append(normalizers.Prepend("▁"))
    if m.escape_whitespaces:
        steps.append(normalizers.Replace(" ", "▁"))
    return normalizers.Sequence(steps)


def _check_user_pieces(m: SpModel, path: Path) -> list[str]:
    """User-defined pieces, longest first (sentencepiece matches the longest); each must pass the
    normaliser unchanged, as sentencepiece passes it."""
    from tokenizers import normalizers

    pieces = sorted((m.pieces[i].piece for i in m.ids_of(USER_DEFINED)), key=len, reverse=True)
    charsmap = normalizers.Precompiled(m.precompiled_charsmap) if m.precompiled_charsmap else None
    for piece in pieces:
        if " " in piece or "▁" in piece or (charsmap and charsmap.normalize_str(piece) != piece):
            raise SentencePieceError(f"{path}: the user-defined piece {piece!r} changes under normalisation (spaces or "
                                     "characters the charsmap rewrites); this conversion cannot keep it whole")
    return pieces


def build_tokenizer(m: SpModel, path: Path, image_token: str, add_bos: bool = True):
    """The ``tokenizers.Tokenizer``; ``image_token`` is added as a special token with the first id
    past the vocabulary (the image slots' id: text cannot produce it, the model never generates it)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    check_model(m, path)
    if any(p.piece == image_token for p in m.pieces):
        raise SentencePieceError(f"{path} has a piece {image_token!r}, the placeholder vlmforge gives image slots; "
                                 "it is not InternLM2's tokenizer")
    stuck = unreachable(m)
    vocab = {p.piece + (UNREACHABLE_MARK if i in stuck else ""): i for i, p in enumerate(m.pieces)}
    if len(vocab) != len(m.pieces):
        raise SentencePieceError(f"{path} has repeated pieces; it is not a valid SentencePiece model")
    unk = m.pieces[m.unk_id].piece
    tok = Tokenizer(models.BPE(vocab, bpe_merges(m), unk_token=unk, fuse_unk=True, byte_fallback=m.byte_fallback,
                               ignore_merges=True))
    tok.normalizer = _normalizer(m)
    user = _check_user_pieces(m, path)
    if user:
        tok.pre_tokenizer = pre_tokenizers.Split(Regex("|".join(map(re.escape, user))), "isolated")
    # what the slow tokenizer splits the text on before sentencepiece sees it (its unk / bos / eos)
    specials = [m.pieces[i].piece for i in sorted({m.unk_id, m.bos_id, m.eos_id})]
    tok.add_special_tokens([AddedToken(s, normalized=False, special=True) for s in specials])
    tok.add_special_tokens([AddedToken(image_token, normalized=False, special=True)])
    assert tok.token_to_id(image_token) == len(m.pieces)  # the first id past the pieces
    if add_bos:
        bos = m.pieces[m.bos_id].piece
        tok.post_processor = processors.TemplateProcessing(single=f"{bos} $A", pair=f"{bos} $A $B",
                                                           special_tokens=[(bos, m.bos_id)])
    steps = [decoders.Replace(UNREACHABLE_MARK, "")] if stuck else []
    steps += [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()]
    if m.add_dummy_prefix:
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def read_tokenizer_config(model_dir: Path) -> dict:
    path = model_dir / "tokenizer_config.json"
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def convert(model_dir: Path, image_token: str) -> tuple[str, SpModel]:
    """(tokenizer.json text, the model) for the checkpoint's ``tokenizer.model``."""
    path = model_dir / "tokenizer.model"
    if not path.is_file():
        raise FileNotFoundError(f"{model_dir} has no tokenizer.model (InternLM2's SentencePiece vocabulary); copy it "
                                "from the checkpoint next to config.json")
    m = read_model(path)
    config = read_tokenizer_config(model_dir)
    if config.get("add_eos_token"):
        raise ValueError(f"{model_dir}/tokenizer_config.json sets add_eos_token, which InternLM-XComposer2's prompts "
                         "never use; remove it")
    tok = build_tokenizer(m, path, image_token, add_bos=bool(config.get("add_bos_token", True)))
    return tok.to_str(), m
