"""A validated request made ready for the scheduler: the prompt as token ids, the settings
with the server's defaults filled in, and the checks that need the server (the model name,
the context of a slot, the vocabulary, `--parallel`)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from ..errors import TokenizerError
from ..runtime.sampling import SamplingParams
from .api_errors import APIError, bad_request
from .chat_output import ChatFlags
from .chat_prompt import render_chat
from .context import ServerContext
from .schemas import ChatRequest, CompletionRequest, SamplingFields
from .tasks import GenerationParams

_INT = re.compile(r"-?[0-9]{1,12}")


@dataclass
class Prepared:
    prompt: list[int]
    prompt_text: Any  # the prompt as the client gave it (or the rendered chat), for llama's `prompt` field
    params: GenerationParams
    stream: bool
    include_usage: bool
    top_logprobs: int | None  # None: no log-probabilities in the response
    chat: ChatFlags | None = None


def _n_predict(ctx: ServerContext, req: SamplingFields, llama: bool) -> int:
    if llama:
        candidates = (("n_predict", req.n_predict), ("max_tokens", req.max_tokens))
    else:
        candidates = (("max_completion_tokens", req.max_completion_tokens), ("max_tokens", req.max_tokens),
                      ("n_predict", req.n_predict))
    name, value = next(((n, v) for n, v in candidates if v is not None), ("", None))
    low = -1 if llama or name == "n_predict" else 1  # llama-server's n_predict: -1 unlimited, 0 prompt only
    if value is None:
        return ctx.options.n_predict
    if not low <= value <= ctx.n_ctx_slot:
        raise bad_request(
            f"{name} {value} is out of range: give {low}..{ctx.n_ctx_slot} (the context of one slot is "
            f"-c / --parallel = {ctx.n_ctx_slot} tokens)"
            + ("; -1 generates until the end" if low == -1 else "")
        )
    return value


def _logit_bias(ctx: ServerContext, bias) -> dict[int, float]:
    if not bias:
        return {}
    pairs = list(bias.items()) if isinstance(bias, dict) else list(bias)
    out: dict[int, float] = {}
    n_vocab = ctx.tokenizer.vocab_size
    for key, value in pairs:
        if value is True:
            raise bad_request("logit_bias: a bias is a number, or false to ban the token")
        value = float("-inf") if value is False else float(value)
        if abs(value) > 1e6 and value != float("-inf"):
            raise bad_request(f"logit_bias: {value} is out of range (give -1e6..1e6, or false to ban the token)")
        if isinstance(key, str) and not _INT.fullmatch(key):
            ids = ctx.tokenizer.encode(key, add_special=False)  # llama-server: every token of the text
        else:
            ids = [int(key)]
        for t in ids:
            if not 0 <= t < n_vocab:
                raise bad_request(f"logit_bias: token id {t} is outside the vocabulary (0..{n_vocab - 1})")
            out[t] = value
    return out


def _generation(ctx: ServerContext, req: SamplingFields, llama: bool, n_probs: int, special) -> GenerationParams:
    o = ctx.options
    if req.n != 1:
        raise bad_request("Only one completion choice is allowed")
    if req.id_slot >= ctx.settings.n_parallel:
        raise bad_request(f"id_slot {req.id_slot} does not exist: slots are 0..{ctx.settings.n_parallel - 1}")
    ctx.check_model(req.model)
    sampling = SamplingParams(
        temp=float(o.temp if req.temperature is None else req.temperature),
        top_k=o.top_k if req.top_k is None else req.top_k,
        top_p=float(o.top_p if req.top_p is None else req.top_p),
        min_p=float(o.min_p if req.min_p is None else req.min_p),
        repeat_penalty=float(o.repeat_penalty if req.repeat_penalty is None else req.repeat_penalty),
        repeat_last_n=o.repeat_last_n if req.repeat_last_n is None else req.repeat_last_n,
        seed=o.seed if req.seed is None else req.seed,
    )
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    return GenerationParams(
        n_predict=_n_predict(ctx, req, llama),
        sampling=sampling,
        presence_penalty=float(req.presence_penalty or 0.0),
        frequency_penalty=float(req.frequency_penalty or 0.0),
        logit_bias=_logit_bias(ctx, req.logit_bias),
        stop=[s for s in stop if s],
        n_probs=n_probs,
        ignore_eos=req.ignore_eos or o.ignore_eos,
        cache_prompt=req.cache_prompt,
        id_slot=req.id_slot,
        special_ids=special,
    )


def _check_prompt(ctx: ServerContext, tokens: list[int]) -> list[int]:
    if not tokens:
        raise bad_request("the prompt is empty: give some text (or token ids)")
    if len(tokens) >= ctx.n_ctx_slot:
        raise APIError(
            f"the request exceeds the available context size: the prompt has {len(tokens)} tokens and a slot "
            f"holds {ctx.n_ctx_slot} (-c / --parallel); shorten the prompt or raise -c",
            "exceed_context_size_error", n_prompt_tokens=len(tokens), n_ctx=ctx.n_ctx_slot,
        )
    n_vocab = ctx.tokenizer.vocab_size
    bad = next((t for t in tokens if not 0 <= t < n_vocab), None)
    if bad is not None:
        raise bad_request(f"prompt token id {bad} is outside the vocabulary (0..{n_vocab - 1})")
    return tokens


def _encode(ctx: ServerContext, text: str, add_special: bool) -> list[int]:
    try:
        return ctx.tokenizer.encode(text, add_special=add_special, parse_special=True)
    except TokenizerError as e:
        raise bad_request(str(e)) from None


def _unsupported_format(req: ChatRequest) -> None:
    fmt = req.response_format
    if fmt and fmt.get("type") not in (None, "text"):
        raise APIError(
            f"response_format {fmt.get('type')!r} is not supported by kiln (no grammar-constrained sampling); "
            "leave it out or use {\"type\": \"text\"}",
            "invalid_request_error",
        )


def prepare_chat(ctx: ServerContext, req: ChatRequest) -> Prepared:
    if ctx.template is None:
        raise bad_request(f"chat completions need a chat template: {ctx.template_error}; start the server "
                          "with --chat-template-file FILE, or use /v1/completions")
    _unsupported_format(req)
    if req.top_logprobs is not None and not req.logprobs:
        raise bad_request("top_logprobs requires logprobs to be set to true")
    tools_on = bool(req.tools) and req.tool_choice != "none"
    chat = render_chat(ctx.template, req, tools_on)
    prompt = _check_prompt(ctx, _encode(ctx, chat.text, add_special=True))
    reasoning = (req.reasoning_format or ctx.settings.reasoning_format) != "none"
    top = (req.top_logprobs or 0) if req.logprobs else None
    params = _generation(ctx, req, False, max(1, top) if top is not None else 0, ctx.special_ids(tools_on))
    return Prepared(prompt, chat.text, params, req.stream, bool(req.stream_options and req.stream_options.include_usage),
                    top, ChatFlags(reasoning, chat.starts_in_reasoning, tools_on))


def _completion_prompt(ctx: ServerContext, prompt) -> list[int]:
    """A text, token ids, or a mix (texts are tokenized; BOS only when the prompt starts with text)."""
    if isinstance(prompt, str):
        return _encode(ctx, prompt, add_special=True)
    if sum(isinstance(p, str) for p in prompt) > 1 and all(isinstance(p, str) for p in prompt):
        raise bad_request("several prompts in one request are not supported: send one request per prompt")
    tokens: list[int] = []
    for k, p in enumerate(prompt):
        tokens += _encode(ctx, p, add_special=k == 0) if isinstance(p, str) else [p]
    return tokens


def prepare_completion(ctx: ServerContext, req: CompletionRequest, llama: bool) -> Prepared:
    if req.suffix or req.echo:
        raise bad_request("suffix and echo are not supported by kiln's /v1/completions")
    prompt = _check_prompt(ctx, _completion_prompt(ctx, req.prompt))
    if llama:
        top = req.n_probs if req.n_probs else None
    elif req.logprobs is None or req.logprobs is False:
        top = None
    else:
        top = 1 if req.logprobs is True else req.logprobs
    params = _generation(ctx, req, llama, max(1, top) if top is not None else 0, frozenset())
    return Prepared(prompt, req.prompt, params, req.stream,
                    bool(req.stream_options and req.stream_options.include_usage), top)
