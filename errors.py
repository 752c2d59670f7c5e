"""The error body every layer answers with, and the typed errors raised from anywhere."""
import logging
from datetime import datetime, timezone
from typing import Any

from starlette.responses import Response

from responses import FastJSONResponse


class ApiError(Exception):
    status_code = 500
    error_code = "INTERNAL_ERROR"
    detail = "Something went wrong on our side. Retry later; if it persists, report the X-Request-ID."

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None, **extra: Any):
        self.detail = detail or self.detail
        self.headers = headers or {}
        self.extra = extra
        super().__init__(self.detail)

    def to_response(self) -> Response:
        return error_response(self.status_code, self.error_code, self.detail, self.headers, **self.extra)

    def body(self) -> dict[str, Any]:
        return error_body(self.error_code, self.detail, **self.extra)


class BadRequest(ApiError):
    status_code, error_code = 400, "BAD_REQUEST"


class InvalidJson(ApiError):
    status_code, error_code = 400, "INVALID_JSON"


class Unauthorized(ApiError):
    status_code, error_code = 401, "UNAUTHORIZED"

    def __init__(self, detail: str, *, token_given: bool, resource_metadata: str | None = None):
        """`resource_metadata`: the URL of the RFC 9728 document, named in the challenge (for /mcp)."""
        self.token_given = token_given
        parameters = ['error="invalid_token"'] if token_given else []
        if resource_metadata:
            parameters.append(f'resource_metadata="{resource_metadata}"')
        challenge = "Bearer " + ", ".join(parameters) if parameters else "Bearer"
        super().__init__(detail, headers={"WWW-Authenticate": challenge})


class Forbidden(ApiError):
    status_code, error_code = 403, "FORBIDDEN"


class TaskNotFound(ApiError):
    status_code, error_code, detail = 404, "TASK_NOT_FOUND", "Task not found"


class ListNotFound(ApiError):
    status_code, error_code, detail = 404, "LIST_NOT_FOUND", "List not found"


class NotFound(ApiError):
    status_code, error_code = 404, "NOT_FOUND"


class InvitationNotFound(ApiError):
    status_code, error_code = 404, "INVITATION_NOT_FOUND"
    detail = "Invitation not found: it is not addressed to your email, or it was revoked, declined or accepted."


class MemberNotFound(ApiError):
    status_code, error_code, detail = 404, "MEMBER_NOT_FOUND", "That user is not a member of this list."


class MethodNotAllowed(ApiError):
    status_code, error_code = 405, "METHOD_NOT_ALLOWED"


class Conflict(ApiError):
    status_code, error_code = 409, "CONFLICT"


class CursorExpired(ApiError):
    status_code, error_code = 410, "CURSOR_EXPIRED"
    detail = (
        "This cursor is older than the retained changes (or not one this server handed out to you). "
        "Start over: fetch your lists and tasks, then follow /api/changes without `since`."
    )


class InvitationExpired(ApiError):
    status_code, error_code = 410, "INVITATION_EXPIRED"
    detail = "This invitation has expired (they last 7 days). Ask the list's owner to invite you again."


class PreconditionFailed(ApiError):
    status_code, error_code = 412, "PRECONDITION_FAILED"
    detail = "The task changed since you read it (If-Match does not match its ETag). Fetch it again and retry."


class PayloadTooLarge(ApiError):
    status_code, error_code = 413, "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    status_code, error_code = 415, "UNSUPPORTED_MEDIA_TYPE"
    detail = "Send the body as JSON with the header Content-Type: application/json."


class ValidationFailed(ApiError):
    status_code, error_code = 422, "VALIDATION_ERROR"

    def __init__(self, errors: list[dict[str, str]], detail: str | None = None):
        summary = detail or "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "Invalid request"
        super().__init__(summary, errors=errors)


class IdempotencyKeyReused(ApiError):
    status_code, error_code = 422, "IDEMPOTENCY_KEY_REUSED"
    detail = "This Idempotency-Key was already used with a different body. Use a new key for a new request."


class RateLimited(ApiError):
    status_code, error_code = 429, "RATE_LIMITED"


class ServiceUnavailable(ApiError):
    status_code, error_code = 503, "SERVICE_UNAVAILABLE"
    detail = "The database is unreachable right now. Retry after the number of seconds in Retry-After."


class SchemaOutOfStep(ApiError):
    """The database schema is not this version's (schema_version.py); the detail says what to run."""

    status_code, error_code = 503, "SCHEMA_MISMATCH"


class InternalError(ApiError):
    pass


DATABASE_RETRY_AFTER_SECONDS = "5"


def database_unavailable(exc: BaseException) -> ServiceUnavailable:
    """A database outage (or a write the database undid: drivers.WriteConflict) as the REST routes
    and the MCP tools both answer it, logged (without SQL)."""
    cause = exc.__cause__ or exc
    public_detail = getattr(exc, "public_detail", None)
    message = getattr(exc, "log_message", "database unavailable")
    logging.getLogger("task_api").warning(message, extra={"reason": str(exc), "error_type": type(cause).__name__})
    return ServiceUnavailable(public_detail, headers={"Retry-After": DATABASE_RETRY_AFTER_SECONDS})


def utc_timestamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_body(error_code: str, detail: str, **extra: Any) -> dict[str, Any]:
    return {"detail": detail, "error_code": error_code, "timestamp": utc_timestamp(), **extra}


def error_response(
    status_code: int, error_code: str, detail: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    return FastJSONResponse(error_body(error_code, detail, **extra), status_code=status_code, headers=headers)


def field_error(error: Any) -> dict[str, str]:
    """A pydantic error as {field, message}: `title`, `tags.3`, `priority` (no `body.` prefix)."""
    source, *path = error.get("loc") or ("body",)
    if source == "query":
        path = [part for part in path if not isinstance(part, int)]  # `?priority=x&priority=y`: say `priority`
    field = ".".join(str(part) for part in path) or str(source)
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field; remove it (id, user_id and timestamps are set by the server)"
    elif error["type"] == "missing" and field == "body":
        message = "a JSON object body is required"
    elif error["type"] == "conflicting_filters":
        field = "status"
    elif error["type"] == "tree_order":
        field = "order"
    elif error["type"] == "one_reference":
        field = "to"
    return {"field": field, "message": message}
