"""`/mcp`: the Model Context Protocol server for AI agents (contract §11), in the same app as the API.

The official SDK's low-level server, Streamable HTTP, stateless with JSON responses: every POST
is answered on its own, so any worker or instance answers any call. Before the SDK sees a request,
`McpEndpoint` verifies the bearer token exactly as the REST routes do (auth.authenticate) and puts
the caller in the request's state; a tool reads the user from there, never from its arguments.
The low-level server (not MCPServer) because the tools' input schemas and argument validation
are our pydantic models', with our error codes (mcp_tools.py), not schemas derived from signatures.
"""
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
from fastapi import APIRouter, Request
from mcp.server.lowlevel.server import Server
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp_types import (
    CallToolRequestParams,
    CallToolResult,
    ListToolsResult,
    PaginatedRequestParams,
    TextContent,
    Tool,
)
from starlette.datastructures import URL
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from auth import TokenVerifier, authenticate
from config import Settings
from db import Database
from errors import ApiError, ServiceUnavailable, Unauthorized
from mcp_tools import TOOLS, call_tool
from middleware import read_body, replay_body
from responses import FastJSONResponse, to_json
from schemas import ProtectedResource

log = logging.getLogger("task_api.mcp")
# The SDK logs every stateless request at INFO ("Terminating session: None"); our access log has them.
logging.getLogger("mcp").setLevel(logging.WARNING)

MCP_PATH = "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource"
TOOL_LIST = ListToolsResult(
    tools=[
        Tool(name=tool.name, description=tool.description, input_schema=tool.input_schema, annotations=tool.annotations)
        for tool in TOOLS.values()
    ]
)


# Without PUBLIC_URL the URLs below come from the request's Host header (fine for local development):
# what names them is never stored by a shared cache, where a forged Host would be served to others.
FROM_THE_REQUEST = {"Cache-Control": "no-store", "Vary": "Host"}


def base_url(scope: Scope, settings: Settings) -> str:
    if settings.public_url:
        return settings.public_url.rstrip("/")
    url = URL(scope=scope)
    return f"{url.scheme}://{url.netloc}{scope.get('root_path', '')}".rstrip("/")


def base_url_headers(settings: Settings) -> dict[str, str]:
    """The headers of a response that names `base_url`."""
    return {} if settings.public_url else FROM_THE_REQUEST


def warn_without_public_url(settings: Settings) -> None:
    if not settings.public_url:
        log.warning(
            "PUBLIC_URL is not set: /mcp's discovery document and WWW-Authenticate name the host each request's "
            "Host header gives. Fine on localhost; in production set PUBLIC_URL (https://api.example.com).",
            extra={"setting": "PUBLIC_URL"},
        )


def tool_error(error: ApiError) -> CallToolResult:
    """A failure as a tool result: the REST error body, as text and as structured content."""
    body = error.body()
    if "Retry-After" in error.headers:  # the agent sees no headers
        body["retry_after_seconds"] = int(error.headers["Retry-After"])
    text = to_json(body).decode()
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=body, is_error=True)


def tool_success(result: dict[str, Any]) -> CallToolResult:
    """`result`: plain JSON, as mcp_tools.call_tool returns it."""
    return CallToolResult(content=[TextContent(type="text", text=to_json(result).decode())], structured_content=result)


class McpEndpoint:
    """The ASGI app at /mcp: rate limit (deferred to here by RateLimitMiddleware), then the token,
    then the SDK's session manager."""

    path = MCP_PATH

    def __init__(self, settings: Settings, database: Database, verifier: TokenVerifier):
        self.settings = settings
        self.database = database
        self.verifier = verifier
        self.server: Server[Any] = Server(
            "task-api", version="1.0.0", on_list_tools=self._list_tools, on_call_tool=self._call_tool
        )
        self._sessions: StreamableHTTPSessionManager | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """The SDK's task group, for the app's lifespan. A manager runs once: a new one per lifespan."""
        # No DNS-rebinding check (security_settings=None): a rebound page has no bearer token, and
        # CORS (main.py) already decides which browser origins may call.
        warn_without_public_url(self.settings)
        self._sessions = StreamableHTTPSessionManager(app=self.server, json_response=True, stateless=True)
        async with self._sessions.run():
            yield
        self._sessions = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # FastAPI records only its own routes in the scope; the access log and metrics read the
        # route's `path` from there (middleware.route_template).
        scope.setdefault("route", self)
        state = scope.setdefault("state", {})
        limited: ApiError | None = state.get("rate_limited")
        if limited is not None:
            body = await read_body(receive) or b""
            if not _is_tool_call(body):  # a tool call gets the limit as a tool error (_call_tool)
                return await limited.to_response()(scope, receive, send)
            receive = replay_body(body, receive)
        try:
            principal = state.get("principal") or await authenticate(_header(scope, b"authorization"), self.verifier)
        except Unauthorized as refused:
            challenge = Unauthorized(
                refused.detail,
                token_given=refused.token_given,
                resource_metadata=base_url(scope, self.settings) + METADATA_PATH,
            )
            challenge.headers.update(base_url_headers(self.settings))
            return await challenge.to_response()(scope, receive, send)
        state["principal"], state["user_id"] = principal, principal.user_id  # user_id: the access log
        if self._sessions is None:
            stopped = ServiceUnavailable("The MCP server is starting or stopping; retry.")
            return await stopped.to_response()(scope, receive, send)
        await self._sessions.handle_request(scope, receive, send)

    async def _list_tools(self, _ctx: Any, _params: PaginatedRequestParams | None) -> ListToolsResult:
        return TOOL_LIST

    async def _call_tool(self, ctx: Any, params: CallToolRequestParams) -> CallToolResult:
        state = ctx.request.scope.get("state", {}) if ctx.request is not None else {}
        principal = state.get("principal")
        if principal is None:  # cannot happen behind __call__; fail closed all the same
            return tool_error(Unauthorized("No verified token for this call.", token_given=False))
        if state.get("rate_limited") is not None:
            return tool_error(state["rate_limited"])
        try:
            return tool_success(await call_tool(self.database, principal, params.name, params.arguments or {}))
        except ApiError as error:
            return tool_error(error)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def _is_tool_call(body: bytes) -> bool:
    try:
        message = orjson.loads(body)
    except orjson.JSONDecodeError:
        return False
    return isinstance(message, dict) and message.get("method") == "tools/call"


router = APIRouter(tags=["mcp"])


@router.get(
    METADATA_PATH,
    response_model=ProtectedResource,
    summary="OAuth protected-resource metadata of /mcp (RFC 9728)",
    description="No token needed. Names the MCP endpoint and, when BETTER_AUTH_URL is set, the authorization "
    "server whose tokens it accepts. The same document is at `" + METADATA_PATH + MCP_PATH + "`.",
)
@router.get(METADATA_PATH + MCP_PATH, include_in_schema=False)  # RFC 9728 §3.1: the resource's path appended
async def protected_resource(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    base = base_url(request.scope, settings)
    document: dict[str, Any] = {"resource": base + MCP_PATH}
    if settings.better_auth_url:
        document["authorization_servers"] = [settings.better_auth_url.rstrip("/")]
    document.update(
        bearer_methods_supported=["header"],
        resource_name="Task API (MCP)",
        resource_documentation=base + "/docs",
    )
    return FastJSONResponse(document, headers=base_url_headers(settings))
