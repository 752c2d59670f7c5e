"""Pure ASGI middleware: request id and access log, CORS, crash safety net, body size and type."""
import itertools
import logging
import os
import re
import secrets
import time
from collections import Counter
from urllib.parse import parse_qsl

from starlette.datastructures import Headers
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import metrics
from errors import BadRequest, InternalError, PayloadTooLarge, UnsupportedMediaType, ValidationFailed
from logs import request_id_var

access_log = logging.getLogger("task_api.access")
error_log = logging.getLogger("task_api.error")

SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
MAX_BODY_BYTES = 64 * 1024
METHODS_WITH_BODY = {"POST", "PUT", "PATCH"}
# A query parameter may be given at most this many times (`tag`: a task carries at most 20 tags).
MAX_PARAMETER_REPEATS = 20
NUL_MESSAGE = "must not contain the NUL character (\\u0000)"


def _start_request_ids() -> None:
    """Request ids: a random prefix per process and a counter: unique without a syscall each."""
    global _request_id_prefix, _request_counter
    _request_id_prefix, _request_counter = secrets.token_hex(8), itertools.count(1)


_start_request_ids()
os.register_at_fork(after_in_child=_start_request_ids)  # a forked worker must not repeat its parent's ids


def new_request_id() -> str:
    return f"{_request_id_prefix}{next(_request_counter):016x}"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class RequestContextMiddleware:
    """Outermost: gives every response (CORS preflights included) an X-Request-ID and logs one
    line per request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        offered = _header(scope, b"x-request-id")
        request_id = offered if offered and SANE_REQUEST_ID.fullmatch(offered) else new_request_id()
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500

        async def send_with_request_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_request_id)
        finally:
            self._log_access(scope, status, started)
            request_id_var.reset(token)

    @staticmethod
    def _log_access(scope: Scope, status: int, started: float) -> None:
        seconds = time.perf_counter() - started
        route = route_template(scope)
        metrics.record_request(scope["method"], route, status, seconds)
        access_log.info(
            "request",
            extra={
                "method": scope["method"],
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "user_id": scope.get("state", {}).get("user_id"),
            },
        )


class CrashGuardMiddleware:
    """Inside CORS (so the browser can read it): turns a crash into a JSON 500 that leaks nothing;
    the traceback goes to the log, under the request id."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        response_started = False

        async def send_tracking_start(message: Message) -> None:
            nonlocal response_started
            response_started = response_started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracking_start)
        except Exception:
            error_log.exception("unhandled error", extra={"path": scope["path"], "method": scope["method"]})
            if not response_started:
                await InternalError().to_response()(scope, receive, send)


class JsonCORSMiddleware(CORSMiddleware):
    """Starlette's CORS, with a refused preflight answered in our JSON error shape."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code == 200:
            return response
        reason = response.body.decode(errors="replace")
        kept = {name: value for name, value in response.headers.items() if name not in ("content-length", "content-type")}
        refused = BadRequest(f"CORS preflight refused: {reason}. Check CORS_ORIGINS.", headers=kept)
        return refused.to_response()


def route_template(scope: Scope) -> str:
    """`/api/{user_id}/tasks/{task_id}`, not the concrete path (no ids or user names in metrics).

    FastAPI 0.163 routes into included routers lazily: the matched route's path is relative to
    the include, whose prefix it records in scope["fastapi"]."""
    route = scope.get("route")
    if route is None:
        return "unmatched"
    included = scope.get("fastapi", {}).get("included_router")
    prefix = getattr(getattr(included, "include_context", None), "prefix", "")
    return prefix + getattr(route, "path", "")


class QueryGuardMiddleware:
    """Query strings get the care bodies get, for every route at once (contract §6): a NUL in any
    parameter (or in the path) and a parameter repeated more than MAX_PARAMETER_REPEATS times are a
    422 naming it, before any handler or driver sees them. Costs two byte scans per request."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and (problem := query_problem(scope)) is not None:
            return await ValidationFailed([problem]).to_response()(scope, receive, send)
        await self.app(scope, receive, send)


def query_problem(scope: Scope) -> dict[str, str] | None:
    if "\x00" in scope["path"]:
        return {"field": "path", "message": NUL_MESSAGE}
    query: bytes = scope.get("query_string", b"")
    if b"%00" not in query and query.count(b"&") < MAX_PARAMETER_REPEATS:
        return None
    repeats: Counter[str] = Counter()
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):  # as Starlette reads it
        if "\x00" in name or "\x00" in value:
            return {"field": name.replace("\x00", "\\u0000"), "message": NUL_MESSAGE}
        repeats[name] += 1
    for name, count in repeats.items():
        if count > MAX_PARAMETER_REPEATS:
            return {
                "field": name,
                "message": f"given {count} times; at most {MAX_PARAMETER_REPEATS} values are accepted",
            }
    return None


class BodyGuardMiddleware:
    """Refuses bodies over 64 KiB (413) and bodies that are not JSON (415) before any parsing."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in METHODS_WITH_BODY:
            return await self.app(scope, receive, send)
        declared_length = _header(scope, b"content-length")
        if declared_length is not None and declared_length.isdigit() and int(declared_length) > MAX_BODY_BYTES:
            return await self._too_large(scope, receive, send)
        body = await read_body(receive)
        if body is None:
            return await self._too_large(scope, receive, send)
        if body and not _is_json(_header(scope, b"content-type")):
            return await UnsupportedMediaType().to_response()(scope, receive, send)
        await self.app(scope, replay_body(body, receive), send)

    @staticmethod
    async def _too_large(scope: Scope, receive: Receive, send: Send) -> None:
        error = PayloadTooLarge(f"The request body is larger than {MAX_BODY_BYTES // 1024} KiB.")
        await error.to_response()(scope, receive, send)


def _is_json(content_type: str | None) -> bool:
    media_type = (content_type or "").split(";", 1)[0].strip().lower()
    return media_type == "application/json" or (media_type.startswith("application/") and media_type.endswith("+json"))


async def read_body(receive: Receive) -> bytes | None:
    """The whole body, or None once it passes the limit (chunked bodies declare no length)."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def replay_body(body: bytes, receive: Receive) -> Receive:
    """Hands the app the body we already read, then the client's own messages (disconnect)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
