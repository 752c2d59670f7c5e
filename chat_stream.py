"""A chat turn as the Vercel AI SDK's UI message stream (protocol v1), what `useChat` reads.

Server-sent events, each `data: <one JSON part>`: `start` (the answer's message id), then
`data-conversation` ({conversation_id}), the text as `text-start` / `text-delta` / `text-end` (one
text part per message the model writes), each tool call as `tool-input-available` then
`tool-output-available` (or `tool-output-error` when the tool failed; the model read the error and
went on), and `finish`, then `data: [DONE]`. The tools run on the server: their parts say
`providerExecuted`, so useChat does not look for them on the client. A failure after the stream
started is an `error` part, then `finish` with `finishReason: "error"`.
The part shapes are the `ai` package's (uiMessageChunkSchema); tests/chatstream reads this stream
with that package's own reader.
"""
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from typing import Any

from chat_events import ChatEvent, Failed, Finished, TextDelta, ToolFinished, ToolStarted
from responses import to_json

HEADERS = {
    "x-vercel-ai-ui-message-stream": "v1",
    "Cache-Control": "no-cache",
    "X-Accel-Buffering": "no",  # no buffering in nginx and the like: parts go out as they come
}
MEDIA_TYPE = "text/event-stream"
DONE = b"data: [DONE]\n\n"


def part(value: dict[str, Any]) -> bytes:
    return b"data: " + to_json(value) + b"\n\n"


def error_text(body: dict[str, Any]) -> str:
    return f"{body.get('error_code', 'ERROR')}: {body.get('detail', '')}"


class UiMessageStream:
    """Encodes one turn's events, in order."""

    def __init__(self, message_id: str, conversation_id: int):
        self.message_id = message_id
        self.conversation_id = conversation_id
        self._open_text: str | None = None

    def opening(self) -> list[bytes]:
        return [
            part({"type": "start", "messageId": self.message_id}),
            part({"type": "data-conversation", "data": {"conversation_id": self.conversation_id}}),
        ]

    def encode(self, event: ChatEvent) -> list[bytes]:
        if isinstance(event, TextDelta):
            text_id = f"{self.message_id}-text-{event.segment}"
            out = [] if self._open_text == text_id else [*self._close_text(), part({"type": "text-start", "id": text_id})]
            self._open_text = text_id
            return [*out, part({"type": "text-delta", "id": text_id, "delta": event.text})]
        if isinstance(event, ToolStarted):
            return [*self._close_text(), part({
                "type": "tool-input-available", "toolCallId": event.call_id, "toolName": event.tool,
                "input": event.arguments, "providerExecuted": True,
            })]
        if isinstance(event, ToolFinished):
            if event.failed:
                return [part({"type": "tool-output-error", "toolCallId": event.call_id,
                              "errorText": error_text(event.result), "providerExecuted": True})]
            return [part({"type": "tool-output-available", "toolCallId": event.call_id, "output": event.result,
                          "providerExecuted": True})]
        if isinstance(event, Finished):
            return [*self._close_text(), part({"type": "finish", "finishReason": "stop"}), DONE]
        if isinstance(event, Failed):
            return [*self._close_text(), part({"type": "error", "errorText": error_text(event.error.body())}),
                    part({"type": "finish", "finishReason": "error"}), DONE]
        return []

    def _close_text(self) -> list[bytes]:
        if self._open_text is None:
            return []
        closed, self._open_text = self._open_text, None
        return [part({"type": "text-end", "id": closed})]

    async def encode_all(self, first: Iterable[ChatEvent], rest: AsyncGenerator[ChatEvent, None]) -> AsyncIterator[bytes]:
        try:
            for chunk in self.opening():
                yield chunk
            for event in first:
                for chunk in self.encode(event):
                    yield chunk
            async for event in rest:
                for chunk in self.encode(event):
                    yield chunk
        finally:
            await rest.aclose()  # the client went away: the turn is cancelled


def replayed(answer: dict[str, Any], message_id: str) -> list[ChatEvent]:
    """A stored answer (an Idempotency-Key replay) as the events that made it."""
    events: list[ChatEvent] = []
    for index, call in enumerate(answer.get("tool_calls") or []):
        call_id = f"{message_id}-call-{index}"
        result = call.get("result") or {}
        events.append(ToolStarted(call_id, call.get("tool", ""), call.get("arguments")))
        events.append(ToolFinished(call_id, call.get("tool", ""), result, "error_code" in result))
    if answer.get("response"):
        events.append(TextDelta(0, answer["response"]))
    return events
