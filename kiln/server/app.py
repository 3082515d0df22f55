"""The FastAPI application: the gate in front of every route (API key, CORS), errors as
OpenAI-style JSON bodies whatever goes wrong, and the routes of routes_generate.py and
routes_info.py.

    app = create_app(ServerContext(engine, tokenizer, settings))

The app starts the scheduler thread when it starts serving and stops it at shutdown.
"""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api_errors import APIError, bad_request
from .context import ServerContext
from .logs import info
from .routes_generate import add_generate_routes
from .routes_info import add_info_routes

log = logging.getLogger("kiln.server")

PUBLIC_PATHS = {"/", "/index.html", "/health", "/v1/health", "/models", "/v1/models"}


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


async def read_json(request: Request) -> Any:
    """The request body as JSON, whatever its Content-Type (as llama-server reads it)."""
    raw = await request.body()
    if not raw.strip():
        raise bad_request("the request body is empty: send a JSON object")
    try:
        return json.loads(raw, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as e:
        raise bad_request(f"malformed JSON in the request body: {e}") from None


def error_response(e: APIError) -> JSONResponse:
    return JSONResponse(e.body(), status_code=e.status)


class Gate:
    """ASGI middleware: CORS headers, preflight requests, and the API key check
    (`Authorization: Bearer KEY` or `X-Api-Key: KEY`; /health, /v1/models and the page are open)."""

    def __init__(self, app, keys: list[str]):
        self.app = app
        self.keys = set(keys)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        origin = headers.get("origin")
        cors = [(b"access-control-allow-origin", origin.encode("latin-1"))] if origin else []

        async def send_with_cors(message):
            if message["type"] == "http.response.start" and cors:
                message = {**message, "headers": list(message.get("headers", [])) + cors}
            await send(message)

        if scope["method"] == "OPTIONS":
            await send_with_cors({"type": "http.response.start", "status": 200, "headers": [
                (b"access-control-allow-credentials", b"true"),
                (b"access-control-allow-methods", b"GET, POST"),
                (b"access-control-allow-headers", b"*"),
                (b"content-length", b"0"),
            ]})
            await send({"type": "http.response.body", "body": b""})
            return
        if self.keys and scope["path"] not in PUBLIC_PATHS:
            auth = headers.get("authorization", "")
            key = auth[7:] if auth.startswith("Bearer ") else headers.get("x-api-key", "")
            if key not in self.keys:
                info("handle", "Unauthorized: Invalid API Key", level="WARN")
                response = error_response(APIError("Invalid API Key", "authentication_error"))
                return await response(scope, receive, send_with_cors)
        await self.app(scope, receive, send_with_cors)


def create_app(ctx: ServerContext) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI):
        ctx.start()
        try:
            yield
        finally:
            ctx.stop()

    app = FastAPI(title="kiln serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.ctx = ctx

    @app.exception_handler(APIError)
    async def on_api_error(request: Request, e: APIError):
        return error_response(e)

    @app.exception_handler(RequestValidationError)
    async def on_validation(request: Request, e: RequestValidationError):
        return error_response(bad_request(f"invalid request: {e.errors()[:3]}"))

    @app.exception_handler(StarletteHTTPException)
    async def on_http(request: Request, e: StarletteHTTPException):
        kind = "not_found_error" if e.status_code == 404 else "invalid_request_error"
        body = {"error": {"code": e.status_code, "message": f"{e.detail}: {request.method} {request.url.path}",
                          "type": kind}}
        return JSONResponse(body, status_code=e.status_code)

    @app.exception_handler(Exception)
    async def on_crash(request: Request, e: Exception):
        log.exception("request failed")
        return error_response(APIError(f"internal server error: {type(e).__name__}: {e}", "server_error"))

    add_generate_routes(app, ctx, read_json)
    add_info_routes(app, ctx, read_json)
    app.add_middleware(Gate, keys=ctx.settings.api_keys)
    return app
