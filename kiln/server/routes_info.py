"""The other endpoints: `/health`, `/v1/models`, `/props`, `/metrics`, `/slots` (and the
save / restore / erase actions), `/tokenize`, `/detokenize`, `/apply-template`, and the chat
page at `/`. Bodies keep llama-server's field names."""

from __future__ import annotations

import asyncio
import time
from importlib import resources

import anyio
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from ..errors import TokenizerError
from ..runtime.sampling import SamplingParams
from .api_errors import APIError, bad_request
from .chat_prompt import render_chat
from .context import ServerContext
from .schemas import ChatRequest, DetokenizeRequest, SlotFileRequest, TokenizeRequest, parse_body
from .slot_files import check_filename
from .tasks import GenerationParams, SlotAction


def _slots_json(ctx: ServerContext) -> list[dict]:
    """Each slot as llama-server's /slots shows it (its request's settings at the top level),
    plus kiln's `is_processing`, `n_past` (tokens in its cache) and `n_prompt_tokens`."""
    out = []
    for s in ctx.scheduler.slots:
        task = s.task
        busy = task is not None
        params = task.params if busy else GenerationParams()
        n_decoded = s.n_decoded if busy else 0
        out.append({
            "n_ctx": s.n_ctx,
            "model": ctx.model_id,
            **params.to_json(),
            "id": s.id,
            "id_task": task.id if busy else -1,
            "state": 1 if busy else 0,
            "is_processing": busy,
            "prompt": ctx.tokenizer.decode(task.prompt) if busy else "",
            "n_prompt_tokens": len(task.prompt) if busy else 0,
            "n_past": ctx.engine.n_past(s.id),
            "next_token": {
                "has_next_token": busy,
                "n_remain": params.n_predict - n_decoded if params.n_predict >= 0 else -1,
                "n_decoded": n_decoded,
                "stopped_eos": False,
                "stopped_word": False,
                "stopped_limit": False,
                "stopping_word": "",
            },
        })
    return out


def _default_settings(ctx: ServerContext) -> dict:
    o = ctx.options
    params = GenerationParams(
        n_predict=o.n_predict,
        sampling=SamplingParams(o.temp, o.top_k, o.top_p, o.min_p, o.repeat_penalty, o.repeat_last_n, o.seed),
    )
    return {"n_ctx": ctx.n_ctx_slot, "model": ctx.model_id, **params.to_json()}


def add_info_routes(app: FastAPI, ctx: ServerContext, read_json) -> None:
    tok = ctx.tokenizer

    @app.get("/health")
    @app.get("/v1/health")
    async def health(request: Request):
        busy = sum(s.busy for s in ctx.scheduler.slots)
        idle = len(ctx.scheduler.slots) - busy
        body = {"status": "ok" if idle else "no slot available", "slots_idle": idle, "slots_processing": busy}
        if "include_slots" in request.query_params and ctx.settings.slots_endpoint:
            body["slots"] = _slots_json(ctx)
        status = 503 if not idle and "fail_on_no_slot" in request.query_params else 200
        return JSONResponse(body, status_code=status)

    @app.get("/v1/models")
    @app.get("/models")
    async def models():
        return {"object": "list", "data": [{
            "id": ctx.model_id, "object": "model", "created": int(time.time()), "owned_by": "llamacpp",
            "meta": ctx.model_meta, "max_model_len": ctx.engine.n_ctx,
        }]}

    @app.get("/props")
    async def props():
        return {
            "system_prompt": "",
            "model_alias": ctx.model_id,
            "model_path": str(ctx.path),
            "model_name": ctx.path.name,
            "default_generation_settings": _default_settings(ctx),
            "total_slots": ctx.settings.n_parallel,
            "chat_template": ctx.template.source if ctx.template else "",
            "bos_token": tok.token_to_piece(tok.bos_id).decode("utf-8", "replace") if tok.bos_id is not None else "",
            "eos_token": tok.token_to_piece(tok.eos_id).decode("utf-8", "replace") if tok.eos_id is not None else "",
            "modalities": {"vision": False, "audio": False},
            "n_ctx": ctx.engine.n_ctx,
            "build_info": "kiln",
        }

    @app.get("/metrics")
    async def metrics():
        if not ctx.settings.metrics:
            raise APIError("This server does not support metrics endpoint.", "not_supported_error")
        text = ctx.metrics.prometheus(ctx.scheduler.slot_use())
        return PlainTextResponse(text, media_type="text/plain; version=0.0.4",
                                 headers={"Process-Start-Time-Unix": str(ctx.metrics.t_start)})

    @app.get("/slots")
    async def slots():
        if not ctx.settings.slots_endpoint:
            raise APIError("This server does not support slots endpoint.", "not_supported_error")
        return _slots_json(ctx)

    @app.post("/slots/{id_slot}")
    async def slot_action(id_slot: str, request: Request):
        try:
            slot = int(id_slot)
        except ValueError:
            raise bad_request("Invalid slot ID") from None
        action = request.query_params.get("action", "")
        if action not in ("save", "restore", "erase"):
            raise bad_request("Invalid action: use ?action=save, restore or erase")
        path = filename = None
        if action != "erase":
            if ctx.settings.slot_save_path is None:
                raise APIError("slot save and restore are off: start the server with --slot-save-path DIR",
                               "not_supported_error")
            filename = check_filename(parse_body(SlotFileRequest, await read_json(request)).filename)
            path = ctx.settings.slot_save_path / filename
        loop = asyncio.get_running_loop()
        done: asyncio.Future = loop.create_future()

        def reply(result) -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(result))

        ctx.scheduler.submit(SlotAction(action, slot, path, filename, reply))
        result = await done
        if isinstance(result, APIError):
            raise result
        return result

    @app.post("/tokenize")
    async def tokenize(request: Request):
        body = parse_body(TokenizeRequest, await read_json(request))
        try:
            ids = await anyio.to_thread.run_sync(
                lambda: tok.encode(body.content, add_special=body.add_special, parse_special=True))
        except TokenizerError as e:
            raise bad_request(str(e)) from None
        if body.with_pieces:
            return {"tokens": [{"id": t, "piece": tok.token_to_piece(t).decode("utf-8", "replace")} for t in ids]}
        return {"tokens": ids}

    @app.post("/detokenize")
    async def detokenize(request: Request):
        body = parse_body(DetokenizeRequest, await read_json(request))
        bad = next((t for t in body.tokens if not 0 <= t < tok.vocab_size), None)
        if bad is not None:
            raise bad_request(f"token id {bad} is outside the vocabulary (0..{tok.vocab_size - 1})")
        return {"content": tok.decode(body.tokens)}

    @app.post("/apply-template")
    async def apply_template(request: Request):
        body = parse_body(ChatRequest, await read_json(request))
        if ctx.template is None:
            raise bad_request(f"no chat template: {ctx.template_error}")
        chat = await anyio.to_thread.run_sync(lambda: render_chat(ctx.template, body, bool(body.tools)))
        return {"prompt": chat.text}

    @app.get("/")
    @app.get("/index.html")
    async def page():
        if not ctx.settings.webui:
            raise APIError("the web page is off (--no-webui)", "not_found_error")
        html = resources.files("kiln.server").joinpath("static/index.html").read_text(encoding="utf-8")
        return HTMLResponse(html)
