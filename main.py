"""Wiring: the app, its middleware, routers and error handlers. `app` at the bottom serves uvicorn."""
import asyncio
import contextlib
import gc
import threading
from contextlib import asynccontextmanager
from typing import Any

from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

import events
from auth import TokenVerifier
import metrics
import reminders
from config import Settings
from db import Database, DatabaseUnavailable, SchemaMismatch
from errors import (
    DATABASE_RETRY_AFTER_SECONDS,
    ApiError,
    InternalError,
    InvalidJson,
    MethodNotAllowed,
    NotFound,
    SchemaOutOfStep,
    ValidationFailed,
    database_unavailable,
    error_response,
    field_error,
)
from live import ChangeNotifier
from logs import configure_logging
import mcp_server
from middleware import (
    BodyGuardMiddleware,
    CrashGuardMiddleware,
    JsonCORSMiddleware,
    QueryGuardMiddleware,
    RequestContextMiddleware,
    error_log,
)
from ratelimit import RateLimitMiddleware, RedisCounter, UserLimit
from responses import FastJSONResponse
from routes import changes, health, lists, sharing, tasks
from routes import chat as chat_routes
from routes import chatkit as chatkit_routes
from routes import metrics as metrics_route
from routes import reminders as reminder_routes
from routes import settings as settings_routes
from schema_version import RECHECK_SECONDS, SchemaVersion
from schemas import ErrorBody
from webhooks import Dispatcher

API_DESCRIPTION = """
A multi-user task API for Next.js + Better Auth frontends.

Every `/api` route needs `Authorization: Bearer <JWT>` from Better Auth (its `jwt()` plugin, verified
with the JWKS) or an HS256/384/512 token signed with `BETTER_AUTH_SECRET`. The task owner is the
token's `sub`. Every route exists twice: `/api/tasks...` and `/api/{user_id}/tasks...` (the path's
user id must equal `sub`, else 403).

Every error is JSON: `{"detail", "error_code", "timestamp"}`, plus `errors: [{field, message}]` on
422 VALIDATION_ERROR. Every response carries `X-Request-ID`.

`POST /mcp` is a Model Context Protocol server (Streamable HTTP, stateless) for AI agents, with the
same bearer token and the same rules: its tools (`add_task`, `list_tasks`, ...) and their input
schemas are listed by the MCP `tools/list` call, not here; see the README.

`POST /api/chat` is an AI assistant over the same tools, acting as the caller (JSON, or the Vercel AI
SDK's UI message stream with `Accept: text/event-stream`); `POST /chatkit` serves OpenAI ChatKit's
frontend. Both need a model: `OPENAI_API_KEY` and/or `OPENAI_BASE_URL` (else 503 CHAT_NOT_CONFIGURED).
"""
# The Mcp-* headers: browser-based MCP clients (the MCP Inspector) send them to /mcp.
CORS_HEADERS = [
    "Authorization", "Content-Type", "If-Match", "If-None-Match", "Idempotency-Key", "X-Request-ID",
    "Mcp-Protocol-Version", "Mcp-Session-Id", "Mcp-Method", "Last-Event-ID",
]
CORS_EXPOSED = [
    "ETag", "Location", "Link", "X-Total-Count", "X-Request-ID", "Retry-After", "Idempotent-Replayed",
    "WWW-Authenticate", "Mcp-Session-Id",
]
COMMON_ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing, malformed, expired or forged token (UNAUTHORIZED)."},
    422: {"model": ErrorBody, "description": "Invalid parameters or body (VALIDATION_ERROR), with `errors`."},
    429: {"model": ErrorBody, "description": "Too many requests (RATE_LIMITED); see Retry-After."},
    500: {"model": ErrorBody, "description": "Unexpected error (INTERNAL_ERROR); nothing internal is exposed."},
    503: {
        "model": ErrorBody,
        "description": "The database is unreachable, or busy (no connection, lock or answer within the deadline), "
        "or it undid a write that collided with a concurrent one (nothing changed) (SERVICE_UNAVAILABLE); the detail "
        "says which; see Retry-After.",
    },
}


def operation_id(route: APIRoute) -> str:
    """Stable ids, so generated TypeScript clients read `tasks-list_tasks`."""
    return f"{route.tags[0]}-{route.name}" if route.tags else route.name


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    configure_logging(settings.log_level)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await app.state.database.open()
        purge = asyncio.get_running_loop().create_task(
            events.purge_now_and_then(app.state.database, settings.changes_retention_days)
        )
        if settings.chat_configured:  # the chat SDKs, loaded now (not on the first turn), frozen below
            chat_routes.load_assistant(app)
            import chatkit_server  # noqa: F401
        # Everything built at start (the app, its routes, the imported libraries) lives as long as
        # the process: moved out of the collector's sight, a full collection no longer walks it on
        # the request path (p99 of get one: 123 -> 49 ms in `make bench`).
        gc.collect()
        gc.freeze()
        verifier: TokenVerifier = app.state.token_verifier
        if verifier.jwks is not None:  # warm the key cache; failure is logged, not fatal
            threading.Thread(target=verifier.jwks.refresh, kwargs={"wait": True}, daemon=True).start()
        background = [asyncio.get_running_loop().create_task(metrics.sample_pool_forever(app.state.database))]
        if settings.reminder_poll_seconds > 0:
            background.append(
                asyncio.get_running_loop().create_task(
                    reminders.fire_reminders_forever(app.state.database, settings.reminder_poll_seconds)
                )
            )
        dispatcher = Dispatcher(settings, app.state.database) if settings.events_webhook_url else None
        if dispatcher is not None:
            dispatcher.start()
        async with app.state.mcp.running():
            yield
        if dispatcher is not None:
            await dispatcher.stop()
        purge.cancel()
        await app.state.change_notifier.close()
        for task in background:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        metrics.worker_stopped()
        await app.state.database.close()
        if app.state.assistant is not None:
            await app.state.assistant.close()
        if app.state.shared_rate_counter is not None:
            await app.state.shared_rate_counter.close()

    app = FastAPIOffline(
        title="Task API",
        version="1.0.0",
        description=API_DESCRIPTION,
        lifespan=lifespan,
        default_response_class=FastJSONResponse,
        generate_unique_id_function=operation_id,
        redoc_url=None,
        redirect_slashes=False,  # `/api/tasks/` is a JSON 404, not a redirect that drops the body
        # FastAPI's OpenTelemetry hooks: off. Left on, they ask OpenTelemetry for its providers on
        # every request (environment lookups, ~10 us) to find none configured; /metrics is ours.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.database = Database(settings)
    app.state.schema_version = SchemaVersion()
    app.state.token_verifier = TokenVerifier(settings)
    app.state.change_notifier = ChangeNotifier(app.state.database, settings.event_streams_per_user)
    app.state.shared_rate_counter = RedisCounter(settings.redis_url) if settings.redis_url else None
    app.state.mcp = mcp_server.McpEndpoint(settings, app.state.database, app.state.token_verifier)
    app.state.assistant = app.state.chatkit = None  # made at first use (routes/chat.py, load_assistant)
    app.state.chat_limit = UserLimit("chat", settings.chat_rate_limit_per_minute, app.state.shared_rate_counter)

    forbidden = {403: {"model": ErrorBody, "description": "The path's user id is not the token's sub (FORBIDDEN)."}}
    for router, tag in ((tasks.router, "tasks"), (lists.router, "lists"), (sharing.router, "sharing"),
                        (settings_routes.router, "settings"), (reminder_routes.router, "reminders"), (chat_routes.router, "chat")):
        app.include_router(router, prefix="/api", tags=[tag], responses=COMMON_ERRORS)
        app.include_router(
            router,
            prefix="/api/{user_id}",
            tags=[f"user-{tag}"],
            dependencies=[Depends(tasks.require_path_user)],
            responses={**COMMON_ERRORS, **forbidden},
        )
    app.include_router(changes.router, prefix="/api", tags=["changes"], responses=COMMON_ERRORS)
    app.include_router(changes.stream_router, prefix="/api", tags=["changes"], responses=COMMON_ERRORS)
    app.include_router(
        changes.router, prefix="/api/{user_id}", tags=["user-changes"],
        dependencies=[Depends(tasks.require_path_user)], responses={**COMMON_ERRORS, **forbidden},
    )
    app.include_router(
        changes.stream_router, prefix="/api/{user_id}", tags=["user-changes"],
        dependencies=[Depends(changes.require_path_stream_user)], responses={**COMMON_ERRORS, **forbidden},
    )
    app.include_router(chatkit_routes.router, responses=COMMON_ERRORS)
    app.include_router(health.router)  # after the API: routes are matched in order, the API is busier
    app.include_router(metrics_route.router)
    app.include_router(mcp_server.router)
    # Not in the OpenAPI document: MCP clients read the tools from the server itself (tools/list).
    app.add_route(mcp_server.MCP_PATH, app.state.mcp, methods=["POST"], include_in_schema=False)
    _add_error_handlers(app)
    _add_middleware(app, settings)
    return app


def _add_middleware(app: FastAPI, settings: Settings) -> None:
    # Added innermost first. Outermost to innermost: request id, access log and metrics (every
    # response, preflights too), CORS, crash guard (so a 500 still carries CORS headers), rate
    # limit, query guard, body guard.
    app.add_middleware(BodyGuardMiddleware)
    app.add_middleware(QueryGuardMiddleware)
    if settings.rate_limit_per_minute > 0:
        app.add_middleware(
            RateLimitMiddleware,
            per_minute=settings.rate_limit_per_minute,
            verifier=app.state.token_verifier,
            shared=app.state.shared_rate_counter,
            deferred_prefixes=(mcp_server.MCP_PATH,),  # a tool call over the limit is a tool error (mcp_server.py)
        )
    app.add_middleware(CrashGuardMiddleware)
    app.add_middleware(
        JsonCORSMiddleware,
        allow_origins=settings.cors_origin_list,
        allow_credentials=True,
        allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        allow_headers=CORS_HEADERS,
        expose_headers=CORS_EXPOSED,
        max_age=600,
    )
    app.add_middleware(RequestContextMiddleware)


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> Response:
        return exc.to_response()

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return NotFound("No such route. See /docs for the routes of this API.").to_response()
        if exc.status_code == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            return MethodNotAllowed(
                f"{request.method} is not allowed on this route; allowed: {allowed}.", headers=exc.headers
            ).to_response()
        if exc.status_code == 400:  # FastAPI's "error parsing the body" (e.g. JSON nested too deep)
            return InvalidJson("The body could not be parsed as JSON (too deeply nested?).").to_response()
        return error_response(exc.status_code, "HTTP_ERROR", str(exc.detail), exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> Response:
        errors = exc.errors()
        if any(error["type"] == "json_invalid" for error in errors):
            return InvalidJson("The body is not valid JSON. Check quotes, commas and brackets.").to_response()
        return ValidationFailed([field_error(error) for error in errors]).to_response()

    @app.exception_handler(DatabaseUnavailable)
    async def database_down(_request: Request, exc: Exception) -> Response:
        return database_unavailable(exc).to_response()

    @app.exception_handler(SchemaMismatch)
    async def schema_mismatch(_request: Request, exc: Exception) -> Response:
        """A table or column missing: a 503 naming the revisions when the schema is out of step;
        with the schema in step it is our own SQL that is wrong (500)."""
        try:
            revisions = await app.state.schema_version.check(app.state.database, max_age=RECHECK_SECONDS)
        except DatabaseUnavailable as unavailable:
            return database_unavailable(unavailable).to_response()
        if revisions.in_step:
            error_log.error("a statement names a table or column the schema lacks", exc_info=exc)
            return InternalError().to_response()
        return SchemaOutOfStep(
            revisions.problem(), headers={"Retry-After": DATABASE_RETRY_AFTER_SECONDS}, **revisions.fields()
        ).to_response()


app = create_app()
