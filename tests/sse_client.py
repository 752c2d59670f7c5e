"""A Server-Sent Events reader for tests: reads a stream in a thread and parses it as a browser does.

    with SseStream(url, headers=...) as stream:
        event = stream.next_event(timeout=2)    # {"id", "event", "data"} or None at the end
        stream.comments                          # the comment lines seen (": ping")
"""
import queue
import socket
import threading
from typing import Any

import httpx

END = object()


class SseStream:
    def __init__(self, url: str, *, headers: dict[str, str] | None = None, params: dict[str, str] | None = None):
        self.url, self.headers, self.params = url, headers or {}, params or {}
        self.events: queue.Queue = queue.Queue()
        self.comments: list[str] = []
        self.status_code: int | None = None
        self.content_type: str | None = None
        self.error_body: str | None = None
        self.last_id: str | None = None
        self._socket: socket.socket | None = None
        self._opened = threading.Event()
        self._client = httpx.Client(timeout=httpx.Timeout(10.0, read=None))
        self._thread = threading.Thread(target=self._read, daemon=True)

    def __enter__(self) -> "SseStream":
        self._thread.start()
        assert self._opened.wait(15), "the stream did not answer"
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()

    def close(self) -> None:
        """Hang up, as a browser closing the tab does (a shutdown unblocks the reading thread)."""
        if self._socket is not None:
            try:
                self._socket.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)
        self._client.close()

    def _read(self) -> None:
        try:
            with self._client.stream("GET", self.url, headers=self.headers, params=self.params) as response:
                self._socket = response.extensions["network_stream"].get_extra_info("socket")
                self.status_code = response.status_code
                self.content_type = response.headers.get("content-type")
                if response.status_code != 200:
                    self.error_body = response.read().decode()
                    self._opened.set()
                    return
                self._opened.set()
                fields: dict[str, str] = {}
                for line in response.iter_lines():
                    if line == "":
                        if "data" in fields:
                            self.events.put(fields)
                        fields = {}
                    elif line.startswith(":"):
                        self.comments.append(line)
                    else:
                        name, _, value = line.partition(":")
                        value = value[1:] if value.startswith(" ") else value
                        fields[name] = fields[name] + "\n" + value if name == "data" and name in fields else value
                        if name == "id":
                            self.last_id = value
        except httpx.HTTPError:
            pass
        finally:
            self._opened.set()
            self.events.put(END)

    def next_event(self, timeout: float) -> dict[str, str] | None:
        """The next event, None when the stream ended; fails if none comes within `timeout`."""
        try:
            item = self.events.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no event within {timeout} s") from None
        if item is END:
            self.events.put(END)
            return None
        return item

    def ended_within(self, timeout: float) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()
