"""The HTTP service (FastAPI on uvicorn): /predict, /learn, /status, /metrics, /rollback, /healthz.

Every refusal is a JSON ``{"error": ...}`` with a 4xx code; an unexpected error is a 500 without a traceback
(the traceback goes to the server's log).
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import Depends, FastAPI, HTTPException, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt

from lifelong.errors import UserError
from lifelong.lock import run_lock
from lifelong.serve import auth
from lifelong.serve.directory import open_directory
from lifelong.serve.inputs import IMAGE_TYPES, BadInput, Inputs, Labelled, parse_json, query_int, rows_of
from lifelong.serve.prometheus import Telemetry
from lifelong.serve.service import Service
from lifelong.serve.settings import ServeSettings

log = logging.getLogger("lifelong.serve")
INLINE_BYTES = 64 * 1024  # /predict bodies up to this size are answered on the event loop (no thread hop)


class Reply(JSONResponse):
    """Compact JSON ending in a newline (so curl's output ends its line)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode() + b"\n"


class Rollback(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: StrictInt | None = Field(None, ge=0)
    relearn: StrictBool = False


def make_app(service: Service, token: str) -> Counted:
    """The ASGI application around ``service``, guarded by ``token``."""
    settings = service.settings
    app = FastAPI(title="lifelong serve", docs_url=None, redoc_url=None, openapi_url=None, default_response_class=Reply)
    telemetry = Telemetry(service)
    bearer = HTTPBearer(auto_error=False)

    def authorized(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if not auth.matches(credentials.credentials if credentials else None, token):
            raise HTTPException(401, "a valid bearer token is required (Authorization: Bearer TOKEN)",
                                headers={"WWW-Authenticate": "Bearer"})

    open_or_token = [Depends(authorized)] if settings.protect_predict else []

    @app.exception_handler(BadInput)
    async def bad_input(request: Request, err: BadInput) -> JSONResponse:
        return Reply({"error": str(err)}, err.status)

    @app.exception_handler(UserError)
    async def user_error(request: Request, err: UserError) -> JSONResponse:
        return Reply({"error": str(err)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        return Reply({"error": err.detail}, err.status_code, headers=err.headers)

    @app.exception_handler(Exception)
    async def internal(request: Request, err: Exception) -> JSONResponse:
        log.exception("internal error on %s", request.url.path)
        return Reply({"error": "internal error; the server's log has the details"}, 500)

    async def body(request: Request) -> bytes:
        """The request body, refused (413) beyond ``max_request_bytes`` whatever its declared length."""
        limit = settings.max_request_bytes
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BadInput(f"the body has {declared} bytes; the limit is {limit}", 413)
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise BadInput(f"the body is larger than the limit of {limit} bytes", 413)
            chunks.append(chunk)
        return b"".join(chunks)

    def samples(request: Request, data: bytes, labelled: bool) -> tuple[Any, list[int] | None, int | None]:
        """(raw rows, labels, task) of a JSON body or of one PNG/JPEG body (?task=, ?label=)."""
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind in IMAGE_TYPES:
            label = query_int(request.query_params, "label")
            if labelled and label is None:
                raise BadInput("an image sent as the body needs its label as a query parameter: /learn?label=N")
            return service.shape.image(data)[None], [label] if labelled else None, query_int(request.query_params,
                                                                                              "task")
        parsed = parse_json(data, Labelled if labelled else Inputs)
        return rows_of(parsed, service.shape, settings.max_batch), getattr(parsed, "labels", None), parsed.task

    def predict_now(request: Request, data: bytes) -> dict[str, Any]:
        rows, _, task = samples(request, data, labelled=False)
        return service.predict(rows, task)

    @app.post("/predict", dependencies=open_or_token)
    async def predict(request: Request) -> Response:
        data = await body(request)
        reply = predict_now(request, data) if len(data) <= INLINE_BYTES else \
            await run_in_threadpool(predict_now, request, data)
        return Reply(reply)  # returned as a response: no per-number encoder walk

    def learn_now(request: Request, data: bytes) -> dict[str, Any]:
        rows, labels, task = samples(request, data, labelled=True)
        return service.learn(rows, labels, task)

    @app.post("/learn", status_code=202, dependencies=[Depends(authorized)])
    async def learn(request: Request) -> dict[str, Any]:
        return await run_in_threadpool(learn_now, request, await body(request))

    @app.post("/rollback", dependencies=[Depends(authorized)])
    async def rollback(request: Request) -> dict[str, Any]:
        data = await body(request)
        wanted = parse_json(data, Rollback) if data.strip() else Rollback()
        return await run_in_threadpool(service.rollback, wanted.version, wanted.relearn)

    @app.get("/status", dependencies=[Depends(authorized)])
    async def status() -> dict[str, Any]:
        return await run_in_threadpool(service.status)

    @app.get("/metrics")
    async def metrics() -> Response:
        data = await run_in_threadpool(telemetry.render)
        return Response(data, media_type="text/plain; version=0.0.4; charset=utf-8")

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "version": service.served.version,
                "learner": "stopped" if service.learner_state().startswith("stopped") else "ok"}

    return Counted(app, telemetry, {route.path for route in app.routes})


class Counted:
    """ASGI middleware counting requests by endpoint and status, and timing them (a pure ASGI wrapper: the
    decorator-style middleware costs a task per request)."""

    def __init__(self, app: FastAPI, telemetry: Telemetry, endpoints: set[str]):
        self.app, self.telemetry, self.endpoints = app, telemetry, endpoints

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start, status = time.perf_counter(), [500]

        async def sending(message: dict) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            endpoint = scope["path"] if scope["path"] in self.endpoints else "other"
            self.telemetry.requests.labels(endpoint, str(status[0])).inc()
            self.telemetry.latency.labels(endpoint).observe(time.perf_counter() - start)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket (port 0: any free one)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def serve(run_dir: Path | None, run_config: dict[str, Any] | None, settings: ServeSettings, token_file: Path | None,
          out: str | None, console: Any) -> None:
    """Open the directory, hold its lock, and serve until interrupted (Ctrl-C or SIGTERM stop cleanly)."""
    directory, cfg = open_directory(run_dir, run_config, out)
    with run_lock(directory):
        service = Service(directory, cfg, settings)
        token, where = auth.load_token(settings.token_env, token_file, directory / "serve")
        app = make_app(service, token)
        sock = bind(settings.host, settings.port)
        host, port = sock.getsockname()[:2]
        console.print(f"Serving {directory} (version {service.served.version}, {cfg.method}, "
                      f"{service.space.scenario}-incremental) on http://{host}:{port}; token {where}", soft_wrap=True)
        interval = sys.getswitchinterval()
        sys.setswitchinterval(settings.switch_interval_ms / 1000)
        service.start()
        previous = signal.signal(signal.SIGTERM, _stop)  # uvicorn re-raises the signal after its graceful exit
        try:
            config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
            uvicorn.Server(config).run(sockets=[sock])
        except (Stopped, KeyboardInterrupt):
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            service.stop()
            sys.setswitchinterval(interval)
        console.print(f"Stopped; served version {service.served.version}, every accepted sample is in the journal "
                      f"(continue with `lifelong serve {directory}`)", soft_wrap=True)


class Stopped(Exception):
    """SIGTERM, after uvicorn's graceful shutdown."""


def _stop(signum: int, frame: Any) -> None:
    raise Stopped
