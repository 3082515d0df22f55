"""`ServerContext`: what every handler needs — the engine and its tokenizer, the chat
template, the settings, the scheduler thread and the metrics — and the model's facts that
`/v1/models` and `/props` report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import TokenizerError
from ..gguf import GGUFFile
from ..tokenizer import Tokenizer
from ..tokenizer.chat import ChatTemplate
from .api_errors import APIError
from .chat_output import THINK_BEGIN, THINK_END
from .logs import info
from .metrics import Metrics
from .scheduler import Scheduler
from .settings import ServerSettings
from .tool_formats import MARKERS


def _model_facts(engine) -> dict[str, Any]:
    n_params = size = 0
    with GGUFFile(engine.path) as f:
        for t in f.tensors.values():
            n_params += t.n_elements
            size += t.nbytes or 0
    meta = engine.metadata
    vocab_type = {"llama": 1, "gpt2": 2, "bert": 3, "t5": 4}.get(meta.get("tokenizer.ggml.model", ""), 0)
    return {
        "vocab_type": vocab_type,
        "n_vocab": engine.hparams.n_vocab,
        "n_ctx_train": engine.hparams.n_ctx_train,
        "n_embd": engine.hparams.n_embd,
        "n_params": n_params,
        "size": size,
    }


class ServerContext:
    def __init__(self, engine, tokenizer: Tokenizer, settings: ServerSettings):
        self.engine = engine
        self.tokenizer = tokenizer
        self.settings = settings
        self.options = engine.options
        self.path = Path(engine.path)
        self.model_id = settings.alias or str(self.path)
        self.model_names = {self.model_id, str(self.path), self.path.name, self.path.stem}
        self.metrics = Metrics()
        if settings.n_parallel > 1:  # batch-invariant answers (Options.block_steps)
            engine.options.block_steps = False
        self.scheduler = Scheduler(engine, tokenizer, settings.n_parallel, self.metrics)
        self.n_ctx_slot = self.scheduler.n_ctx_slot
        try:
            self.template: ChatTemplate | None = ChatTemplate.from_metadata(engine.metadata, settings.chat_template)
            self.template_error = ""
        except TokenizerError as e:
            self.template, self.template_error = None, str(e)
        wanted = set(MARKERS) | {THINK_BEGIN, THINK_END}
        self.marker_ids = {t: i for i, t in enumerate(tokenizer.vocab.tokens) if t in wanted}
        self.model_meta = _model_facts(engine)

    def warm_up(self) -> None:
        """One small batch and one token in a spare sequence, so that the first request does not
        pay for compiling the kernels (llama-server warms up too)."""
        info("main", "warming up the model with an empty run")
        spare = self.settings.n_parallel
        first = self.tokenizer.bos_id if self.tokenizer.bos_id is not None else 0
        try:
            self.engine.eval([first, first], spare, all_logits=False)
            self.engine.eval([first], spare, all_logits=False)
        finally:
            self.engine.reset(spare)

    def start(self, warm_up: bool = True) -> None:
        self.scheduler.start(self.warm_up if warm_up else None)
        info("main", "model loaded")

    def stop(self) -> None:
        self.scheduler.stop()

    def check_model(self, name: str | None) -> None:
        if name and name not in self.model_names:
            raise APIError(
                f"The model `{name}` does not exist: this server runs `{self.model_id}` (see GET /v1/models; "
                "set the name with --alias)",
                "not_found_error",
            )

    def special_ids(self, tools: bool) -> frozenset[int]:
        """Marker tokens whose text goes into a chat's output, so that it can be parsed."""
        texts = {THINK_BEGIN, THINK_END} | (set(MARKERS) if tools else set())
        return frozenset(i for t, i in self.marker_ids.items() if t in texts)
