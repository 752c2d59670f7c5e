"""The real service in a subprocess (`uvicorn main:app`), for tests that need real HTTP, real
concurrency, real processes (SIGKILL) or the real stdout.

    with LiveServer(database_url, workers=2) as server:
        httpx.get(server.url + "/health")
        server.kill()            # SIGKILL the whole process group (master and workers)
        server.start()           # same port, same database
        server.output()          # everything it printed (stdout and stderr), as text
"""
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx

PROJECT_DIR = Path(__file__).resolve().parent.parent
UVICORN = str(Path(sys.executable).with_name("uvicorn"))


def run_in_threads(count: int, work: Callable[[int], None], *, timeout: float = 60.0) -> None:
    """Run work(0), ..., work(count - 1) in parallel threads and wait for all; fails if one hangs."""
    threads = [threading.Thread(target=work, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    assert not any(thread.is_alive() for thread in threads), "a request hung"


def released_together(work: list[Callable[[], None]], *, timeout: float = 60.0) -> None:
    """Each callable in a thread of its own, all released at once by a barrier; waits for all."""
    barrier = threading.Barrier(len(work))

    def run(index: int) -> None:
        barrier.wait(timeout=30)
        work[index]()

    run_in_threads(len(work), run, timeout=timeout)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    def __init__(self, database_url: str, *, secret: str, workers: int = 1, env: dict[str, str] | None = None):
        self.database_url = database_url
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workers = workers
        self.env = {
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NEON_DB_URL", "REDIS_URL")},
            "DATABASE_URL": database_url,
            "BETTER_AUTH_SECRET": secret,
            "RATE_LIMIT_PER_MINUTE": "0",
            "LOG_LEVEL": "INFO",
            **(env or {}),
        }
        self._log = tempfile.NamedTemporaryFile(prefix="task-api-", suffix=".log", delete=False)
        self.process: subprocess.Popen | None = None
        self._final_output: str | None = None

    def start(self, timeout: float = 30.0) -> "LiveServer":
        command = [UVICORN, "main:app", "--host", "127.0.0.1", "--port", str(self.port), "--no-access-log"]
        if self.workers > 1:
            command += ["--workers", str(self.workers)]
        self.process = subprocess.Popen(
            command,
            cwd=PROJECT_DIR,
            env=self.env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: kill() reaches the workers too
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"uvicorn exited with {self.process.returncode}:\n{self.output()[-3000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=1.0).status_code == 200:
                    if self.workers == 1 or self._workers_ready():
                        return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"uvicorn did not answer within {timeout} s:\n{self.output()[-3000:]}")

    def _workers_ready(self) -> bool:
        return self.output().count("Application startup complete") >= self.workers

    def kill(self) -> None:
        """SIGKILL, no shutdown of any kind: what a crash or an OOM kill does."""
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        try:
            os.killpg(self.process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=15)
        # Workers are in the same group; give them a moment to be gone before a restart reuses the port.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            try:
                os.killpg(self.process.pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)

    def output(self) -> str:
        if self._final_output is not None:
            return self._final_output
        return Path(self._log.name).read_text(encoding="utf-8", errors="replace")

    def __enter__(self) -> "LiveServer":
        return self.start()

    def __exit__(self, *exc_info) -> None:
        self.stop()
        self._final_output = self.output()  # still readable after the with block
        self._log.close()
        try:
            os.unlink(self._log.name)
        except OSError:
            pass
