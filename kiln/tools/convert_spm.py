"""Read the pieces of a SentencePiece `tokenizer.model` without the sentencepiece package.

The file is a protobuf `ModelProto`; its field 1 repeats `SentencePiece`
messages of (1: piece string, 2: score float, 3: type enum, NORMAL=1 by
default). The type numbers are those llama.cpp uses for token types
(1 normal, 2 unknown, 3 control, 4 user defined, 5 unused, 6 byte).
Everything else in the file (trainer and normalizer specs) is skipped.
"""

from __future__ import annotations

import struct
from pathlib import Path

from ..errors import ConvertError


class _Malformed(Exception):
    pass


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf) or shift > 63:
            raise _Malformed("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of each field of a message; value is bytes for wire type 2."""
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = _varint(buf, pos)
        elif wire == 1:
            value, pos = buf[pos : pos + 8], pos + 8
        elif wire == 2:
            length, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + length], pos + length
        elif wire == 5:
            value, pos = buf[pos : pos + 4], pos + 4
        else:
            raise _Malformed(f"unsupported wire type {wire}")
        if pos > len(buf):
            raise _Malformed("truncated field")
        yield number, wire, value


def read_sentencepiece_model(path: Path) -> list[tuple[str, float, int]]:
    """(piece, score, type) of every piece, in id order."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConvertError(f"{path}: cannot read the SentencePiece model ({e.strerror})") from None
    pieces = []
    try:
        for number, wire, value in _fields(data):
            if number != 1 or wire != 2:
                continue
            piece, score, ptype = None, 0.0, 1
            for n, w, v in _fields(value):
                if n == 1 and w == 2:
                    piece = v.decode("utf-8")
                elif n == 2 and w == 5:
                    score = struct.unpack("<f", v)[0]
                elif n == 3 and w == 0:
                    ptype = int(v)
            if piece is None:
                raise _Malformed(f"piece {len(pieces)} has no text")
            pieces.append((piece, score, ptype))
    except (_Malformed, UnicodeDecodeError) as e:
        raise ConvertError(
            f"{path}: is not a SentencePiece model ({e}); download tokenizer.model again or remove it to use tokenizer.json"
        ) from None
    if not pieces:
        raise ConvertError(f"{path}: holds no SentencePiece pieces; download tokenizer.model again")
    return pieces
