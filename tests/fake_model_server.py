"""A scripted OpenAI-compatible model: a real HTTP server answering `POST /v1/chat/completions`,
streamed (SSE chunks, when the request says `"stream": true`) and not, from a script of turns.

    with ScriptedModel() as model:                 # 127.0.0.1, a free port, a thread
        model.script(tool_calls(("add_task", {"title": "Buy milk"})), text("Added."))
        settings = make_settings(url, openai_base_url=model.base_url)
        ...
        model.requests[0]["messages"]              # what the service sent, in order

Each call to the model takes the next turn of the script (a plain text answer when the script is
empty). A turn is an answer (`text`, `tool_calls`), a failure (`error_status`, `invalid_json`,
`hang`), or a function of the request that returns one (a model that reads what it was sent).
A refused connection needs no server: `refused_url()` is a port nothing listens on.
"""
import itertools
import json
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_ids = itertools.count(1)


@dataclass
class Answer:
    text: str | None = None
    calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)


@dataclass
class Failure:
    status: int | None = None  # an HTTP error status
    body: bytes = b""
    hang_seconds: float = 0.0  # answer nothing for this long (the service's deadline is shorter)
    stream_body: bytes = b""  # what a streamed request gets instead of `body` (same status)


Turn = Answer | Failure | Callable[[dict[str, Any]], "Answer | Failure"]


def text(content: str) -> Answer:
    return Answer(text=content)


def tool_calls(*calls: tuple[str, dict[str, Any] | str], content: str | None = None) -> Answer:
    """One model answer asking for these tool calls, in order (arguments as a dict, or a raw string)."""
    return Answer(text=content, calls=list(calls))


def error_status(status: int = 500, message: str = "the model is overloaded") -> Failure:
    return Failure(status=status, body=json.dumps({"error": {"message": message, "type": "server_error"}}).encode())


def invalid_json() -> Failure:
    return Failure(
        status=200,
        body=b'{"id": "chatcmpl-1", "choices": [ {"message": ',
        stream_body=b'data: {"id": "chatcmpl-1", "choices": [ {"delta": \n\ndata: [DONE]\n\n',
    )


def hang(seconds: float = 30.0) -> Failure:
    return Failure(hang_seconds=seconds)


def refused_url() -> str:
    """A base URL nothing listens on: every connection is refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


class ScriptedModel:
    def __init__(self, model_name: str = "scripted-model"):
        self.model_name = model_name
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.seconds: list[float] = []  # each call's time in the model, from its request read to its answer sent
        self._turns: list[Turn] = []
        self._default: Turn | None = None
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    def __enter__(self) -> "ScriptedModel":
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._stopping.set()
        self._server.shutdown()
        self._server.server_close()

    def script(self, *turns: Turn, then: Turn | None = None) -> "ScriptedModel":
        """Replace the script (and forget the requests seen so far). `then`: the turn of every call
        after the script (default: the text "OK"), e.g. a model that keeps failing."""
        with self._lock:
            self._turns = list(turns)
            self._default = then
            self.requests.clear()
            self.headers.clear()
            self.seconds.clear()
        return self

    @property
    def calls(self) -> int:
        return len(self.requests)

    def _next(self, request: dict[str, Any]) -> Answer | Failure:
        with self._lock:
            self.requests.append(request)
            turn = self._turns.pop(0) if self._turns else self._default or text("OK")
        return turn(request) if callable(turn) else turn

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        model = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                # Each write goes out at once: a small body written after its headers would
                # otherwise wait for the client's delayed ACK (~40 ms), time that is not ours.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def do_POST(self) -> None:
                started = time.perf_counter()
                try:
                    self._answer()
                finally:
                    with model._lock:
                        model.seconds.append(time.perf_counter() - started)

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    return self._send(404, b'{"error": {"message": "not found"}}')
                with model._lock:
                    model.headers.append({key.lower(): value for key, value in self.headers.items()})
                turn = model._next(request)
                if isinstance(turn, Failure):
                    if turn.hang_seconds:
                        model._stopping.wait(turn.hang_seconds)
                        return self._send(500, b'{"error": {"message": "hung"}}')
                    if request.get("stream") and turn.stream_body:
                        return self._send(turn.status or 500, turn.stream_body, "text/event-stream")
                    return self._send(turn.status or 500, turn.body)
                if request.get("stream"):
                    return self._stream(turn, request)
                return self._send(200, json.dumps(model.completion(turn)).encode())

            def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", content_type)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _stream(self, turn: Answer, request: dict[str, Any]) -> None:
                try:
                    self.send_response(200)
                    self.send_header("Content-Type", "text/event-stream")
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    for chunk in model.chunks(turn, request):
                        data = f"data: {chunk}\n\n".encode()
                        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        return Handler

    # ------------------------------------------------------------------ the Chat Completions shapes

    def _calls(self, turn: Answer) -> list[dict[str, Any]]:
        return [
            {
                "id": f"call_{next(_ids)}",
                "type": "function",
                "function": {"name": name, "arguments": arguments if isinstance(arguments, str) else json.dumps(arguments)},
            }
            for name, arguments in turn.calls
        ]

    def completion(self, turn: Answer) -> dict[str, Any]:
        message: dict[str, Any] = {"role": "assistant", "content": turn.text}
        if turn.calls:
            message["tool_calls"] = self._calls(turn)
        return {
            "id": f"chatcmpl-{next(_ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_name,
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if turn.calls else "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        }

    def chunks(self, turn: Answer, request: dict[str, Any]) -> list[str]:
        """The answer as a model streams it: the text in small pieces, each tool call's arguments
        in two pieces, then the finish reason, the usage when asked for, and [DONE]."""
        base = {"id": f"chatcmpl-{next(_ids)}", "object": "chat.completion.chunk", "created": int(time.time()), "model": self.model_name}

        def chunk(delta: dict[str, Any], finish: str | None = None) -> str:
            return json.dumps({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        out = [chunk({"role": "assistant", "content": ""})]
        words = (turn.text or "").split(" ")
        for index, word in enumerate(words if turn.text else []):
            out.append(chunk({"content": word if index == 0 else " " + word}))
        for index, call in enumerate(self._calls(turn)):
            arguments = call["function"]["arguments"]
            half = len(arguments) // 2
            out.append(chunk({"tool_calls": [{"index": index, "id": call["id"], "type": "function",
                                              "function": {"name": call["function"]["name"], "arguments": arguments[:half]}}]}))
            out.append(chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments[half:]}}]}))
        out.append(chunk({}, "tool_calls" if turn.calls else "stop"))
        if (request.get("stream_options") or {}).get("include_usage"):
            out.append(json.dumps({**base, "choices": [], "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}}))
        out.append("[DONE]")
        return out
