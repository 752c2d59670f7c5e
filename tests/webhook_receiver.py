"""A webhook receiver for tests: a small HTTP server on 127.0.0.1 that records every POST and
answers what the test says. `stop()` closes the port (connection refused), `start()` opens it again.

    receiver = Receiver().start()
    receiver.answer = lambda request: 500     # every request fails until changed
    receiver.acknowledged()                   # the requests answered 2xx, in arrival order
"""
import base64
import hashlib
import hmac
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson

from live_server import free_port


@dataclass
class Received:
    path: str  # with the query string
    headers: dict[str, str]  # lower-cased names
    body: bytes
    status: int = 0  # what the receiver answered

    @property
    def event(self) -> dict[str, Any]:
        return orjson.loads(self.body)


class Receiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.path = "/hooks/task-events"
        self.requests: list[Received] = []
        self.answer: Callable[[Received], int] = lambda _request: 204
        self.hang = threading.Event()  # set: every request waits until released
        self.release = threading.Event()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.path}"

    def start(self) -> "Receiver":
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                request = Received(self.path, {name.lower(): value for name, value in self.headers.items()}, body)
                if receiver.hang.is_set():
                    receiver.release.wait(timeout=60)
                with receiver._lock:
                    request.status = receiver.answer(request)
                    receiver.requests.append(request)
                self.send_response(request.status)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def acknowledged(self) -> list[Received]:
        with self._lock:
            return [request for request in self.requests if 200 <= request.status < 300]

    def wait_for(self, condition: Callable[[], bool], timeout: float = 60.0, what: str = "the events") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            time.sleep(0.1)
        raise AssertionError(f"the receiver did not get {what} within {timeout} s; got {len(self.requests)} requests")


def verify_standard_webhook(secret: str, request: Received, *, tolerance_seconds: int = 300) -> None:
    """What a Standard Webhooks consumer does (written out, not with the library being tested)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    msg_id, timestamp = request.headers["webhook-id"], request.headers["webhook-timestamp"]
    assert abs(time.time() - int(timestamp)) <= tolerance_seconds
    signed = f"{msg_id}.{timestamp}.".encode() + request.body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = [part.split(",", 1)[1] for part in request.headers["webhook-signature"].split() if part.startswith("v1,")]
    assert any(hmac.compare_digest(signature, expected) for signature in given), "bad webhook signature"
