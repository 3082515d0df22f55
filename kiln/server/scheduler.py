"""The scheduler: one thread that owns the engine and runs every slot (continuous batching).

Each turn of its loop takes new tasks, drops those whose client went away, puts waiting
tasks into idle slots (the slot whose cache shares the longest prefix with the prompt,
else the least recently used; the cache beyond the shared prefix is removed, logged as
llama-server does: `kv cache rm [p0, end)`), then evaluates one batch: the next token of
every generating slot and, in the room left up to `-b` tokens, prompt chunks of slots
still reading their prompt, all in one `Engine.eval_batch` call. A new request's prompt
is thus processed while the others generate.

The engine's context (`-c`) is shared as llama-server shares it: each of the N slots gets
`-c / N` tokens. The scheduler enforces that limit itself (the engine's own limit per
sequence stays `-c`), so the KV size line printed at load is the one ik_llama.cpp prints.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque

from ..errors import KilnError
from ..runtime.engine import LAST, BatchItem
from . import slot_files
from .api_errors import APIError
from .logs import info
from .metrics import Metrics, SlotUse
from .slots import GENERATE, PROMPT, Slot
from .tasks import ErrorEvent, SlotAction, Task

log = logging.getLogger("kiln.server")


def common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


class Scheduler:
    def __init__(self, engine, tokenizer, n_parallel: int, metrics: Metrics):
        self.engine = engine
        self.n_parallel = n_parallel
        self.n_ctx_slot = engine.n_ctx // n_parallel
        self.n_batch = max(1, engine.options.batch_size)
        self.metrics = metrics
        self.slots = [Slot(i, self.n_ctx_slot, tokenizer, engine.eog_ids) for i in range(n_parallel)]
        self.inbox: queue.Queue = queue.Queue()
        self.waiting: deque[Task] = deque()
        self.thread = threading.Thread(target=self._run, name="kiln-scheduler", daemon=True)
        self._order = 0  # prompt slots are fed in the order they were assigned
        self._assigned_at: dict[int, int] = {}
        info("init", "initializing slots", n_slots=n_parallel)
        for s in self.slots:
            info("init", "new slot", id_slot=s.id, n_ctx_slot=s.n_ctx)

    # ----- called from other threads -----

    def start(self, warm_up=None) -> None:
        """Start the loop; `warm_up` runs first in the loop's own thread (the thread that runs every
        batch: evaluating from a second thread after another one made the OpenMP pool was measured
        slower here) and start() returns when it is done."""
        self._warm_up = warm_up
        self._ready = threading.Event()
        self.thread.start()
        self._ready.wait()

    def stop(self) -> None:
        self.inbox.put(None)
        self.thread.join(timeout=30)

    def submit(self, item: Task | SlotAction) -> None:
        self.inbox.put(item)

    def slot_use(self) -> SlotUse:
        kv = sum(self.engine.n_past(s.id) for s in self.slots)
        return SlotUse(sum(s.busy for s in self.slots), len(self.waiting), kv, self.engine.n_ctx)

    # ----- the loop -----

    def _busy(self) -> bool:
        return bool(self.waiting) or any(s.busy for s in self.slots)

    def _run(self) -> None:
        try:
            if self._warm_up is not None:
                self._warm_up()
        except Exception:
            log.exception("warm-up failed")
        finally:
            self._ready.set()
        actions: list[SlotAction] = []
        while True:
            try:
                item = self.inbox.get(block=not self._busy() and not actions)
                while True:
                    if item is None:
                        return
                    (actions if isinstance(item, SlotAction) else self.waiting).append(item)
                    item = self.inbox.get_nowait()
            except queue.Empty:
                pass
            for action in actions:
                self._slot_action(action)
            actions.clear()
            self._drop_cancelled()
            self._assign()
            if any(s.busy for s in self.slots):
                self._step()
                if not any(s.busy for s in self.slots) and not self.waiting:
                    info("update_slots", "all slots are idle")

    def _drop_cancelled(self) -> None:
        for task in [t for t in self.waiting if t.cancelled.is_set()]:
            self.waiting.remove(task)
            self.metrics.on_cancelled()
        for slot in self.slots:
            if slot.busy and slot.task.cancelled.is_set():
                info("update_slots", "task cancelled: the client closed the connection", id_slot=slot.id,
                     id_task=slot.task.id)
                self.metrics.on_cancelled()
                slot.release()

    def _pick(self, task: Task) -> Slot | None:
        if task.params.id_slot >= 0:
            slot = self.slots[task.params.id_slot]
            return None if slot.busy else slot
        idle = [s for s in self.slots if not s.busy]
        if not idle:
            return None
        if task.params.cache_prompt:
            return max(idle, key=lambda s: (common_prefix(self.engine.cache.seq(s.id).tokens, task.prompt),
                                            -s.t_last_used))
        return min(idle, key=lambda s: s.t_last_used)

    def _assign(self) -> None:
        for task in list(self.waiting):
            slot = self._pick(task)
            if slot is None:
                continue
            self.waiting.remove(task)
            cached = self.engine.cache.seq(slot.id).tokens
            n = common_prefix(cached, task.prompt) if task.params.cache_prompt else 0
            n = min(n, len(task.prompt) - 1)  # the last prompt token is evaluated again for its logits
            self.engine.truncate(n, slot.id)
            info("update_slots", "kv cache rm [p0, end)", id_slot=slot.id, id_task=task.id, p0=n)
            slot.assign(task, n)
            self._order += 1
            self._assigned_at[slot.id] = self._order

    def _step(self) -> None:
        budget = self.n_batch
        chosen: list[tuple[Slot, BatchItem]] = []
        for slot in self.slots:
            if slot.state == GENERATE:
                chosen.append((slot, BatchItem(slot.id, slot.next_input(1), LAST)))
                budget -= 1
        for slot in sorted((s for s in self.slots if s.state == PROMPT), key=lambda s: self._assigned_at[s.id]):
            if budget <= 0:
                break
            tokens = slot.next_input(budget)
            budget -= len(tokens)
            chosen.append((slot, BatchItem(slot.id, tokens, LAST)))
        t0 = time.perf_counter()
        try:
            logits = self.engine.eval_batch([item for _, item in chosen])
        except Exception as e:  # a failed batch fails its requests, not the server
            self._fail([slot for slot, _ in chosen], e)
            return
        seconds = time.perf_counter() - t0
        self.metrics.on_batch(len(chosen))
        for (slot, item), rows in zip(chosen, logits, strict=True):
            was_prompt = slot.state == PROMPT
            done = slot.after_batch(len(item.tokens), rows[-1], seconds)
            if was_prompt and (done or slot.state == GENERATE):
                self.metrics.on_prompt_done(len(slot.prompt) - slot.n_cached, slot.t_prompt_ms)
            if done:
                self.metrics.on_finished(slot.last.timings)

    def _fail(self, slots: list[Slot], error: Exception) -> None:
        if isinstance(error, KilnError):
            message = str(error)
        else:
            log.exception("batch evaluation failed")
            message = f"internal error while evaluating the batch: {type(error).__name__}: {error}"
        for slot in slots:
            slot.task.sink(ErrorEvent(APIError(message, "server_error")))
            self.metrics.on_failed()
            self.engine.reset(slot.id)  # its cache may hold part of the failed batch
            slot.release()

    def _slot_action(self, action: SlotAction) -> None:
        try:
            if not 0 <= action.id_slot < len(self.slots):
                raise APIError(f"slot {action.id_slot} does not exist (0..{len(self.slots) - 1})",
                               "invalid_request_error")
            if self.slots[action.id_slot].busy:
                raise APIError(f"slot {action.id_slot} is busy with a request; try again when it is idle",
                               "unavailable_error")
            if action.action == "save":
                result = slot_files.save_slot(self.engine, action.id_slot, action.path)
            elif action.action == "restore":
                result = slot_files.restore_slot(self.engine, action.id_slot, action.path, self.n_ctx_slot)
            else:
                result = slot_files.erase_slot(self.engine, action.id_slot)
            action.reply(result)
        except APIError as e:
            action.reply(e)
        except Exception as e:
            log.exception("slot action failed")
            action.reply(APIError(f"slot {action.action} failed: {type(e).__name__}: {e}", "server_error"))
