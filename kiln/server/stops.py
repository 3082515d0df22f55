"""Stop strings: find one in the generated text, and hold back a tail that may become one.

A stop string can end inside a token and start several tokens back, so after each token
the text is searched again from where a new match could begin; the streamed text stops
short of any tail that is the beginning of a stop string (it is sent once it is clear).
"""

from __future__ import annotations


def find_stop(text: str, stops: list[str], old_len: int) -> tuple[int, str] | None:
    """The first stop string that appears in `text` and was not complete in text[:old_len]:
    (its position, the string), or None."""
    best: tuple[int, str] | None = None
    for word in stops:
        pos = text.find(word, max(0, old_len - len(word) + 1))
        if pos >= 0 and (best is None or pos < best[0]):
            best = (pos, word)
    return best


def partial_stop_start(text: str, stops: list[str]) -> int:
    """Where the longest tail of `text` that begins some stop string starts (len(text): none)."""
    start = len(text)
    for word in stops:
        for k in range(min(len(word) - 1, len(text)), 0, -1):
            if word.startswith(text[-k:]):
                start = min(start, len(text) - k)
                break
    return start
