"""Cutting special tokens out of a text before it is tokenized, as llama.cpp does.

llama.cpp (`tokenizer_st_partition`) takes the special tokens longest text
first and, for each, cuts every occurrence out of the pieces of text that are
left; what remains between them is tokenized normally. That order matters
where two special texts overlap: the longer one wins even if the shorter one
starts earlier. Tokens marked "rstrip" (Phi-3) also remove the ASCII
whitespace that follows them.

Only the special tokens that occur in the text are tried, so a vocabulary
with thousands of them (Gemma's `<unusedN>`) costs little on a long text:
occurrences are found by looking, at each position holding a character that
starts some special text, at the few lengths special texts of that character
have.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

# C's isspace in the "C" locale, which llama.cpp uses for lstrip/rstrip
_C_SPACE = " \t\n\v\f\r"


class SpecialSplitter:
    """Splits a text into pieces of text (str) and special token ids (int)."""

    def __init__(self, specials: Iterable[tuple[int, str]], rstrip: frozenset[int] = frozenset()):
        # longest first; equal lengths by id (llama.cpp's sort leaves their order unspecified)
        order = sorted(((i, t) for i, t in specials if t), key=lambda e: (-len(e[1]), e[0]))
        self._id: dict[str, int] = {}
        for i, t in order:
            self._id.setdefault(t, i)  # a text that several tokens share belongs to the first
        self._order = [(i, t) for i, t in order if self._id[t] == i]
        self._rstrip = rstrip
        lengths: dict[str, set[int]] = {}
        for t in self._id:
            lengths.setdefault(t[0], set()).add(len(t))
        self._lengths = {c: sorted(ls, reverse=True) for c, ls in lengths.items()}
        self._starts = (
            re.compile("[" + "".join(re.escape(c) for c in sorted(lengths)) + "]") if lengths else None
        )

    def __bool__(self) -> bool:
        return bool(self._order)

    def occurring(self, text: str) -> set[str]:
        """The special texts that occur in `text` (overlapping occurrences included)."""
        found: set[str] = set()
        if self._starts is None:
            return found
        ids, lengths = self._id, self._lengths
        for m in self._starts.finditer(text):
            p = m.start()
            for n in lengths[text[p]]:
                s = text[p : p + n]
                if s in ids:
                    found.add(s)
        return found

    def split(self, text: str) -> list[str | int]:
        if not text:
            return []
        found = self.occurring(text)
        if not found:
            return [text]
        parts: list[str | int] = [text]
        for tid, special in self._order:
            if special not in found:
                continue
            rstrip = tid in self._rstrip
            out: list[str | int] = []
            for part in parts:
                if isinstance(part, int) or special not in part:
                    out.append(part)
                    continue
                pieces = part.split(special)
                for k, piece in enumerate(pieces):
                    if k:
                        out.append(tid)
                        if rstrip:
                            piece = piece.lstrip(_C_SPACE)
                    if piece:
                        out.append(piece)
            parts = out
        return parts
