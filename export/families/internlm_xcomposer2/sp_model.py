"""A SentencePiece ``tokenizer.model`` read without sentencepiece or protobuf: the file is a
serialized ``ModelProto``, and the few fields the conversion needs are read off the protobuf wire
format here (field numbers from sentencepiece_model.proto; proto2 defaults where a field is absent).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path

# SentencePiece.Type
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
BPE = 2  # TrainerSpec.ModelType


class SentencePieceError(ValueError):
    pass


@dataclass
class Piece:
    piece: str
    score: float = 0.0
    type: int = NORMAL


@dataclass
class SpModel:
    pieces: list[Piece] = field(default_factory=list)
    model_type: int = 1  # UNIGRAM unless the trainer spec says otherwise
    byte_fallback: bool = False
    treat_whitespace_as_suffix: bool = False
    unk_id: int = 0
    bos_id: int = 1
    eos_id: int = 2
    precompiled_charsmap: bytes = b""
    add_dummy_prefix: bool = True
    remove_extra_whitespaces: bool = True
    escape_whitespaces: bool = True

    def ids_of(self, kind: int) -> list[int]:
        return [i for i, p in enumerate(self.pieces) if p.type == kind]


def _fields(data: bytes):
    """(field number, wire type, value) of one message: ints for varints, bytes for the rest."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            size, pos = _varint(data, pos)
            value, pos = data[pos:pos + size], pos + size
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise SentencePieceError(f"unsupported protobuf wire type {wire}")
        if pos > end:
            raise SentencePieceError("truncated protobuf message")
        yield number, wire, value


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data):
            raise SentencePieceError("truncated protobuf varint")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def _signed(value: int) -> int:  # int32 fields are sign-extended to 64 bits on the wire
    return value - (1 << 64) if value >= 1 << 63 else value


def _piece(data: bytes) -> Piece:
    p = Piece(piece="")
    for number, wire, value in _fields(data):
        if number == 1 and wire == 2:
            p.piece = value.decode("utf-8")
        elif number == 2 and wire == 5:
            p.score = struct.unpack("<f", value)[0]
        elif number == 3 and wire == 0:
            p.type = value
    return p


def parse_model(data: bytes) -> SpModel:
    m = SpModel()
    for number, wire, value in _fields(data):
        if number == 1 and wire == 2:
            m.pieces.append(_piece(value))
        elif number == 2 and wire == 2:
            _read_varints(m, value, TRAINER_INTS, TRAINER_BOOLS)
        elif number == 3 and wire == 2:
            _read_varints(m, value, {}, NORMALIZER_BOOLS)
            m.precompiled_charsmap = next((bytes(v) for n, w, v in _fields(value) if n == 2 and w == 2), b"")
    return m


# field number → SpModel attribute, in TrainerSpec / NormalizerSpec
TRAINER_INTS = {3: "model_type", 40: "unk_id", 41: "bos_id", 42: "eos_id"}
TRAINER_BOOLS = {24: "treat_whitespace_as_suffix", 35: "byte_fallback"}
NORMALIZER_BOOLS = {3: "add_dummy_prefix", 4: "remove_extra_whitespaces", 5: "escape_whitespaces"}


def _read_varints(m: SpModel, data: bytes, ints: dict, bools: dict) -> None:
    for number, wire, value in _fields(data):
        if wire == 0 and number in ints:
            setattr(m, ints[number], _signed(value))
        elif wire == 0 and number in bools:
            setattr(m, bools[number], bool(value))


def read_model(path: Path) -> SpModel:
    """``tokenizer.model`` → its pieces and the settings encoding depends on; a clear error for
    anything that is not a SentencePiece model."""
    try:
        m = parse_model(path.read_bytes())
        ok = bool(m.pieces) and all(p.piece for p in m.pieces)
    except (SentencePieceError, UnicodeDecodeError, struct.error, IndexError):
        ok = False
    if not ok:
        raise SentencePieceError(f"{path} is not a SentencePiece model (no pieces could be read); copy the "
                                 "checkpoint's tokenizer.model next to config.json")
    return m
