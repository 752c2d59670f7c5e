"""What talks to the servers under test: tokens (and a JWKS for EdDSA), plain HTTP checks, and wrk
with the Lua scripts of bench/lua/."""
from __future__ import annotations

import base64
import json
import os
import secrets
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import jwt

LUA_DIR = Path(__file__).resolve().parent / "lua"


class Auth:
    """Tokens for the benchmark user and the writer user. The floor always gets HS256."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.secret = secrets.token_urlsafe(48)
        self.kid = "bench-" + secrets.token_hex(4)
        self.jwks_server: ThreadingHTTPServer | None = None
        self.jwks_url: str | None = None
        if mode == "eddsa":
            from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
            from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

            self.private_key = Ed25519PrivateKey.generate()
            raw = self.private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
            x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
            self.jwks = {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": self.kid, "alg": "EdDSA", "use": "sig"}]}

    def claims(self, user: str) -> dict:
        now = int(time.time())
        return {"sub": user, "iat": now, "exp": now + 3 * 3600, "email": f"{user}@bench.local", "name": user}

    def hs256(self, user: str) -> str:
        return jwt.encode(self.claims(user), self.secret, algorithm="HS256")

    def ours(self, user: str) -> str:
        if self.mode == "eddsa":
            return jwt.encode(self.claims(user), self.private_key, algorithm="EdDSA", headers={"kid": self.kid})
        return self.hs256(user)

    def start_jwks(self) -> None:
        if self.mode != "eddsa":
            return
        body = json.dumps(self.jwks).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):
                pass

        self.jwks_server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.jwks_url = f"http://127.0.0.1:{self.jwks_server.server_address[1]}/api/auth/jwks"
        threading.Thread(target=self.jwks_server.serve_forever, daemon=True).start()

    def stop_jwks(self) -> None:
        if self.jwks_server is not None:
            self.jwks_server.shutdown()
            self.jwks_server.server_close()
            self.jwks_server = None


def http(method: str, url: str, token: str | None = None, body: dict | None = None, timeout: float = 5.0):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, method=method)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()[:300]


def wait_ready(url: str, token: str | None, proc: subprocess.Popen, name: str, log_path: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{name} exited with {proc.returncode} while starting; see {log_path}:\n{tail(log_path)}")
        try:
            status, _ = http("GET", url, token, timeout=2)
            if status == 200:
                return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        time.sleep(0.2)
    raise SystemExit(f"{name} not ready after {timeout:.0f}s ({url}); see {log_path}:\n{tail(log_path)}")


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Wrk:
    def __init__(self, connections: int, threads: int, timeout_s: int) -> None:
        self.connections, self.threads, self.timeout_s = connections, threads, timeout_s

    def run(self, base: str, script: str, path: str, token: str, ids: list[int], duration: float,
            limit: int | None = None, extra_env: dict[str, str] | None = None, connections: int | None = None) -> dict:
        connections = connections or self.connections
        env = {**os.environ, "BENCH_LUA_DIR": str(LUA_DIR), "BENCH_TOKEN": token,
               "BENCH_TASK_IDS": ",".join(map(str, ids)), **(extra_env or {})}
        if limit:
            env["BENCH_LIMIT_PER_THREAD"] = str(max(1, -(-limit // self.threads)))
        cmd = ["wrk", f"-t{self.threads}", f"-c{connections}", f"-d{max(1, round(duration))}s",
               f"--timeout={self.timeout_s}s", "-s", str(LUA_DIR / script), base + path]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        watchdog = threading.Timer(duration + 60, proc.kill)
        watchdog.start()
        lines, finished = [], 0
        try:
            for line in proc.stdout:
                lines.append(line)
                if line.startswith("BENCH_THREAD_DONE"):
                    finished += 1
                    if finished == self.threads:
                        # Every thread reached its request limit: wrk stops early on SIGINT and still reports.
                        proc.send_signal(signal.SIGINT)
            stderr = proc.stderr.read()
            proc.wait()
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for line in lines:
            if line.startswith("BENCH_JSON "):
                result = json.loads(line[len("BENCH_JSON "):])
                seconds = result["duration_us"] / 1e6
                result["rps"] = result["requests"] / seconds if seconds else 0.0
                result["p50_ms"] = result["latency_us"]["p50"] / 1000
                result["p99_ms"] = result["latency_us"]["p99"] / 1000
                result["socket_errors"] = sum(v for k, v in result["errors"].items() if k != "status")
                return result
        raise RuntimeError(f"wrk gave no result (exit {proc.returncode}): {' '.join(cmd)}\n{''.join(lines)}\n{stderr}")
