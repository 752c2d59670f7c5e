"""What a chat turn reports (contract §13): its events, which the routes encode as JSON, as a UI
message stream or as ChatKit events, and the two errors of chat. Light on purpose: the routes
import it, and the SDKs behind a turn (chat.py) load only when chat is configured."""
from dataclasses import dataclass
from typing import Any

from errors import ApiError

RETRY_AFTER_SECONDS = "10"


class ChatNotConfigured(ApiError):
    status_code, error_code = 503, "CHAT_NOT_CONFIGURED"
    detail = (
        "Chat is not configured on this server: set OPENAI_API_KEY (OpenAI, Gemini) and/or OPENAI_BASE_URL "
        "(any Chat Completions server, e.g. Ollama at http://localhost:11434/v1), and CHAT_MODEL."
    )


class ChatUnavailable(ApiError):
    status_code, error_code = 503, "CHAT_UNAVAILABLE"

    def __init__(self, why: str):
        super().__init__(
            f"The assistant's model {why}. Your message and anything the assistant already did are saved in "
            f"the conversation; retry after the seconds in Retry-After.",
            headers={"Retry-After": RETRY_AFTER_SECONDS},
        )


@dataclass(frozen=True)
class TextDelta:
    segment: int  # one per message the model writes in the turn (a stream's text part)
    text: str


@dataclass(frozen=True)
class ToolStarted:
    call_id: str
    tool: str
    arguments: Any


@dataclass(frozen=True)
class ToolFinished:
    call_id: str
    tool: str
    result: dict[str, Any]
    failed: bool


@dataclass(frozen=True)
class Finished:
    answer: dict[str, Any]  # {conversation_id, response, tool_calls}: the JSON route's body
    message: dict[str, Any]  # the assistant message stored


@dataclass(frozen=True)
class Failed:
    error: ApiError


ChatEvent = TextDelta | ToolStarted | ToolFinished | Finished | Failed
