"""Run a real Better Auth server (server.mjs) so tests can obtain genuine JWTs.

Usage::

    from tests.betterauth.harness import node_available, ensure_node_modules, start_better_auth

    ensure_node_modules()
    with start_better_auth("EdDSA") as ba:
        token = ba.token_for("alice@example.com", "password123", "Alice")
        jwks = ba.jwks()          # GET {base_url}/api/auth/jwks

Tokens come from the jwt plugin's ``GET /api/auth/token`` (-> ``{"token": "<jwt>"}``)
and carry ``iss`` == ``aud`` == ``base_url``, ``sub`` == the Better Auth user id.
"""

from __future__ import annotations

import collections
import os
import secrets
import shutil
import socket
import subprocess
import threading

import httpx

HERE = os.path.dirname(os.path.abspath(__file__))
ALGORITHMS = ("EdDSA", "ES256", "RS256")
API = "/api/auth"


def node_available() -> bool:
    """True if a Node.js >= 20 binary and npm are on PATH."""
    if not shutil.which("node") or not shutil.which("npm"):
        return False
    try:
        out = subprocess.run(["node", "--version"], capture_output=True, text=True, timeout=10).stdout
        return int(out.strip().lstrip("v").split(".")[0]) >= 20
    except (OSError, ValueError, subprocess.SubprocessError):
        return False


def ensure_node_modules() -> None:
    """Install the pinned packages from package-lock.json if node_modules is missing."""
    if os.path.isdir(os.path.join(HERE, "node_modules", "better-auth")):
        return
    proc = subprocess.run(
        ["npm", "ci", "--no-audit", "--no-fund"], cwd=HERE, capture_output=True, text=True, timeout=600
    )
    if proc.returncode != 0:
        raise RuntimeError(f"npm ci failed in {HERE}:\n{proc.stdout}\n{proc.stderr}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class BetterAuthServer:
    """A `node server.mjs` subprocess; usable as a context manager."""

    def __init__(self, alg: str = "EdDSA", port: int | None = None, startup_timeout: float = 20.0):
        if alg not in ALGORITHMS:
            raise ValueError(f"alg must be one of {ALGORITHMS}, not {alg!r}")
        self.alg = alg
        self.port = port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[str] | None = None
        self._output: collections.deque[str] = collections.deque(maxlen=200)
        self._ready = threading.Event()
        self._saw_ready = False

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> BetterAuthServer:
        env = {k: v for k, v in os.environ.items() if k not in ("NODE_ENV", "TEST")}
        env.update(
            PORT=str(self.port),
            BASE_URL=self.base_url,
            JWT_ALG=self.alg,
            BETTER_AUTH_SECRET=secrets.token_hex(32),
        )
        self._proc = subprocess.Popen(
            ["node", "server.mjs"],
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        self._ready.wait(self.startup_timeout)
        if not self._saw_ready or self._proc.poll() is not None:
            self.stop()
            raise RuntimeError(f"Better Auth server did not become ready:\n{self.output}")
        # Better Auth creates its signing key on the first /jwks or /token call; two first calls at
        # once (our service warming its key cache, a test asking for a token) can create two keys.
        # A real deployment has its key in its database already: make it exist before anyone asks.
        self.jwks()
        return self

    def _pump(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:  # drain forever so the pipe never blocks the server
            self._output.append(line)
            if line.startswith("READY "):
                self._saw_ready = True
                self._ready.set()
        self._ready.set()  # process exited: unblock start(), which then sees it is dead

    def stop(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(5)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait(5)

    @property
    def output(self) -> str:
        return "".join(self._output)

    def __enter__(self) -> BetterAuthServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- Better Auth HTTP API ----------------------------------------------
    def _client(self) -> httpx.Client:
        # Better Auth rejects cookie-bearing POSTs whose Origin is not a trusted origin.
        return httpx.Client(base_url=self.base_url + API, headers={"Origin": self.base_url}, timeout=10)

    def token_for(self, email: str, password: str, name: str) -> str:
        """Sign up (if new) and sign in via Better Auth, then return a JWT from /api/auth/token."""
        with self._client() as c:
            r = c.post("/sign-up/email", json={"email": email, "password": password, "name": name})
            if r.status_code != 200 and "USER_ALREADY_EXISTS" not in r.text:
                raise RuntimeError(f"sign-up failed: {r.status_code} {r.text}")
            c.cookies.clear()
            r = c.post("/sign-in/email", json={"email": email, "password": password})
            if r.status_code != 200:
                raise RuntimeError(f"sign-in failed: {r.status_code} {r.text}")
            r = c.get("/token")  # session cookie from sign-in is sent by the client's cookie jar
            if r.status_code != 200:
                raise RuntimeError(f"token failed: {r.status_code} {r.text}")
            return r.json()["token"]

    def jwks(self) -> dict:
        return httpx.get(f"{self.base_url}{API}/jwks", timeout=10).raise_for_status().json()


def start_better_auth(alg: str = "EdDSA", port: int | None = None) -> BetterAuthServer:
    """Start server.mjs and wait for READY; use as `with start_better_auth("ES256") as ba:`."""
    return BetterAuthServer(alg, port).start()
