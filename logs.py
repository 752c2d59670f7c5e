"""Structured logs: one JSON object per line, each carrying the request id of its request."""
import logging
import sys
import traceback
from contextvars import ContextVar
from datetime import datetime, timezone
from typing import Any

import orjson

request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as a field.
# (uvicorn's `color_message` is its message again, with terminal colour codes: not for a JSON log.)
_STANDARD_ATTRIBUTES = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": request_id_var.get(),
        }
        entry.update({key: value for key, value in record.__dict__.items() if key not in _STANDARD_ATTRIBUTES})
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()

    def formatException(self, exc_info: Any) -> str:
        """The traceback, with each database error reduced to its SQLSTATE and primary message:
        PostgreSQL's DETAIL quotes the values of the row it refused ("Failing row contains (...)"),
        which are a user's task contents, and those never go to the log."""
        _, exception, _ = exc_info
        whole = formatted = traceback.TracebackException.from_exception(exception)
        seen: set[int] = set()
        while exception is not None and formatted is not None and id(exception) not in seen:
            seen.add(id(exception))
            diagnostics = getattr(exception, "diag", None)  # a psycopg error
            if diagnostics is not None:  # `_str`: the message TracebackException prints (CPython 3.11, 3.12)
                formatted._str = f"[{diagnostics.sqlstate}] {diagnostics.message_primary}"
            if exception.__cause__ is not None:
                exception, formatted = exception.__cause__, formatted.__cause__
            else:
                exception, formatted = exception.__context__, formatted.__context__
        return "".join(whole.format()).rstrip("\n")


def configure_logging(level: str) -> None:
    # The JSON lines carry none of these; skipping them makes every log call (one access line per
    # request) cheaper. See "Optimization" in the logging HOWTO.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None  # no caller lookup (file, line, function) per record
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Our own access log replaces uvicorn's (which would not carry the request id or user).
    logging.getLogger("uvicorn.access").disabled = True
    # httpx logs every request with its full URL at INFO: a webhook URL may carry credentials or a
    # token (webhooks.py logs the receiver without them), and one line per event is noise anyway.
    logging.getLogger("httpx").setLevel(max(root.level, logging.WARNING))
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
