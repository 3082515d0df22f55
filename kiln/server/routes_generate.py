"""The generating endpoints: `POST /v1/chat/completions`, `/v1/completions` (OpenAI) and
`/completion` (llama-server's own), each whole or streamed as server-sent events.

A request is parsed and prepared (tokenized, checked) off the event loop, handed to the
scheduler as a `Task`, and answered from the events the scheduler sends back. When the
client goes away (the stream is cut, or a plain request's connection closes) the task is
cancelled and its slot freed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.responses import StreamingResponse

from . import responses as R
from .api_errors import APIError
from .chat_output import ChatStream, message_json, parse_output
from .context import ServerContext
from .prepare import Prepared, prepare_chat, prepare_completion
from .schemas import ChatRequest, CompletionRequest, parse_body
from .tasks import ErrorEvent, Event, FinalEvent, Task, TokenEvent


class ClientGone(APIError):
    """The client closed the connection before the answer was ready."""

    def __init__(self):
        super().__init__("the client closed the connection", "invalid_request_error")


class Run:
    """One submitted task and the queue its events arrive on."""

    def __init__(self, ctx: ServerContext, prep: Prepared, request: Request):
        self.ctx = ctx
        self.prep = prep
        self.request = request
        self.queue: asyncio.Queue[Event] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def sink(event: Event) -> None:
            try:
                loop.call_soon_threadsafe(self.queue.put_nowait, event)
            except RuntimeError:  # the event loop is gone (shutdown)
                pass

        self.task = Task(prep.prompt, prep.params, sink)
        ctx.scheduler.submit(self.task)

    async def events(self) -> AsyncIterator[Event]:
        """The task's events until the last one; raises ClientGone when the client has left
        (checked every half second, also while tokens keep coming)."""
        loop = asyncio.get_running_loop()
        next_check = loop.time() + 0.5
        while True:
            try:
                event = await asyncio.wait_for(self.queue.get(), timeout=max(0.0, next_check - loop.time()))
            except TimeoutError:
                event = None
            if loop.time() >= next_check:
                next_check = loop.time() + 0.5
                if await self.request.is_disconnected():
                    raise ClientGone()
            if event is None:
                continue
            yield event
            if not isinstance(event, TokenEvent):
                return

    async def final(self) -> Any:
        """The completion, after the whole generation (the events in between are dropped)."""
        try:
            async for event in self.events():
                if isinstance(event, ErrorEvent):
                    raise event.error
                if isinstance(event, FinalEvent):
                    return event.completion
        finally:
            self.task.cancelled.set()  # no effect once the task is over
        raise APIError("the generation ended without a result", "server_error")


class EventStream(StreamingResponse):
    """Server-sent events that cancel the task however the response ends."""

    def __init__(self, chunks: AsyncIterator[str], task: Task):
        super().__init__(chunks, media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
        self.kiln_task = task

    async def __call__(self, scope, receive, send):
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.kiln_task.cancelled.set()


def sse(data: Any) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


async def _start(ctx: ServerContext, request: Request, read_json, model, prepare: Callable) -> Run:
    body = parse_body(model, await read_json(request))
    prep = await anyio.to_thread.run_sync(prepare, ctx, body)
    return Run(ctx, prep, request)


async def _stream(run: Run, chunks: Callable[[Event], list[dict]], done: bool) -> AsyncIterator[str]:
    try:
        async for event in run.events():
            if isinstance(event, ErrorEvent):
                yield sse(event.error.body())
                return
            for chunk in chunks(event):
                yield sse(chunk)
        if done:
            yield "data: [DONE]\n\n"
    except ClientGone:
        return
    finally:
        run.task.cancelled.set()


def _timed(chunk: dict, c) -> dict:
    chunk["timings"] = c.timings.to_json()
    return chunk


def chat_chunks(run: Run) -> Callable[[Event], list[dict]]:
    ctx, prep = run.ctx, run.prep
    env = R.Envelope("chat", ctx.model_id)
    stream = ChatStream(prep.chat)
    tok = ctx.tokenizer
    first = [True]

    def chunks(event: Event) -> list[dict]:
        out = []
        if first[0]:
            first[0] = False
            out.append(R.chat_chunk(env, {"role": "assistant", "content": None}))
        if isinstance(event, TokenEvent):
            deltas = stream.feed(event.text)
            if event.probs is not None and prep.top_logprobs is not None:
                deltas = deltas or [{}]
            out += [R.chat_chunk(env, d) for d in deltas]
            if event.probs is not None and prep.top_logprobs is not None:
                out[-1]["choices"][0]["logprobs"] = {
                    "content": R.logprobs_content(tok, [event.probs], prep.top_logprobs)}
            return out
        c = event.completion
        deltas, msg = stream.finish(c.text)
        out += [R.chat_chunk(env, d) for d in deltas]
        out.append(R.chat_chunk(env, {}, R.finish_reason(c, bool(msg.tool_calls))))
        if prep.include_usage:
            out.append(env.wrap([], chunk=True, usage=R.usage(c)))
        _timed(out[-1], c)
        return out

    return chunks


def completion_chunks(run: Run) -> Callable[[Event], list[dict]]:
    ctx, prep = run.ctx, run.prep
    env = R.Envelope("text", ctx.model_id)

    def chunks(event: Event) -> list[dict]:
        if isinstance(event, TokenEvent):
            lp = None
            if event.probs is not None and prep.top_logprobs is not None:
                lp = R.legacy_logprobs(ctx.tokenizer, [event.probs], prep.top_logprobs)
            elif not event.text:
                return []
            return [R.text_chunk(env, event.text, logprobs=lp)]
        c = event.completion
        out = [R.text_chunk(env, "", R.finish_reason(c))]
        if prep.include_usage:
            out.append(env.wrap([], chunk=True, usage=R.usage(c)))
        else:
            out[-1]["usage"] = R.usage(c)
        return [_timed(out[-1], c)] if len(out) == 1 else [out[0], _timed(out[1], c)]

    return chunks


def llama_chunks(run: Run) -> Callable[[Event], list[dict]]:
    ctx, prep = run.ctx, run.prep

    def chunks(event: Event) -> list[dict]:
        if isinstance(event, TokenEvent):
            if not event.text and event.probs is None:
                return []
            return [R.llama_partial(ctx.tokenizer, event.text, event.id_slot, event.probs, prep.top_logprobs)]
        return [R.llama_final(ctx.tokenizer, ctx.model_id, prep, event.completion, stream=True)]

    return chunks


def add_generate_routes(app: FastAPI, ctx: ServerContext, read_json) -> None:
    async def chat(request: Request):
        run = await _start(ctx, request, read_json, ChatRequest, prepare_chat)
        if run.prep.stream:
            return EventStream(_stream(run, chat_chunks(run), done=True), run.task)
        c = await run.final()
        prep = run.prep
        msg = parse_output(c.text, prep.chat, partial=False)
        choice: dict[str, Any] = {"finish_reason": R.finish_reason(c, bool(msg.tool_calls)), "index": 0,
                                  "message": message_json(msg)}
        if prep.top_logprobs is not None:
            choice["logprobs"] = {"content": R.logprobs_content(ctx.tokenizer, c.probs, prep.top_logprobs)}
        env = R.Envelope("chat", ctx.model_id)
        return JSONResponse(env.wrap([choice], usage=R.usage(c), timings=c.timings.to_json()))

    async def completions(request: Request):
        run = await _start(ctx, request, read_json, CompletionRequest,
                           lambda c, body: prepare_completion(c, body, llama=False))
        if run.prep.stream:
            return EventStream(_stream(run, completion_chunks(run), done=True), run.task)
        c = await run.final()
        prep = run.prep
        lp = R.legacy_logprobs(ctx.tokenizer, c.probs, prep.top_logprobs) if prep.top_logprobs is not None else None
        env = R.Envelope("text", ctx.model_id)
        choice = {"text": c.text, "index": 0, "logprobs": lp, "finish_reason": R.finish_reason(c)}
        return JSONResponse(env.wrap([choice], usage=R.usage(c), timings=c.timings.to_json()))

    async def completion(request: Request):
        run = await _start(ctx, request, read_json, CompletionRequest,
                           lambda c, body: prepare_completion(c, body, llama=True))
        if run.prep.stream:
            return EventStream(_stream(run, llama_chunks(run), done=False), run.task)
        c = await run.final()
        return JSONResponse(R.llama_final(ctx.tokenizer, ctx.model_id, run.prep, c, stream=False))

    for path in ("/v1/chat/completions", "/chat/completions"):
        app.add_api_route(path, chat, methods=["POST"])
    app.add_api_route("/v1/completions", completions, methods=["POST"])
    for path in ("/completion", "/completions"):
        app.add_api_route(path, completion, methods=["POST"])
