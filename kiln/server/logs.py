"""Log lines worded as llama-server prints them.

`info("update_slots", "kv cache rm [p0, end)", id_slot=0, id_task=3, p0=12)` gives
`INFO [            update_slots] kv cache rm [p0, end) | tid="..." timestamp=... id_slot=0 id_task=3 p0=12`
and `slot_info(0, 3, "print_timing", text)` gives `slot print_timing: id  0 | task 3 | text`.
"""

from __future__ import annotations

import json
import logging
import threading
import time

log = logging.getLogger("kiln.server")


def info(function: str, message: str, level: str = "INFO", **extra) -> None:
    fields = {"tid": str(threading.get_ident()), "timestamp": int(time.time()), **extra}
    tail = " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in fields.items())
    line = f"{level:>4} [{function:>24}] {message} | {tail}"
    (log.warning if level == "WARN" else log.info)(line)


def slot_info(id_slot: int, id_task: int, function: str, text: str) -> None:
    log.info(f"slot {function[:12]:>12}: id {id_slot:2d} | task {id_task} | {text}")


def timings_text(prompt_ms: float, prompt_n: int, gen_ms: float, gen_n: int) -> str:
    """The three lines of llama-server's print_timings."""

    def row(label: str, ms: float, n: int) -> str:
        per_token = ms / n if n else 0.0
        per_second = 1e3 * n / ms if ms > 0 else 0.0
        return f"{label} = {ms:10.2f} ms / {n:5d} tokens ({per_token:8.2f} ms per token, {per_second:8.2f} tokens per second)"

    return (
        "\n"
        + row("prompt eval time", prompt_ms, prompt_n)
        + "\n"
        + row("       eval time", gen_ms, gen_n)
        + "\n"
        + f"      total time = {prompt_ms + gen_ms:10.2f} ms / {prompt_n + gen_n:5d} tokens"
    )
