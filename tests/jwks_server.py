"""A stand-in for Better Auth's JWKS endpoint: real keys, served over real HTTP, fetches counted.

    with JwksServer() as server:
        key = server.add_key("EdDSA")           # Ed25519, as Better Auth's jwt() plugin makes by default
        token = key.sign({"sub": "alice", "exp": ...})
        settings = make_settings(url, jwks_url=server.jwks_url)           # or better_auth_url=server.base_url
        server.fetches, server.paths                                       # how many times the JWKS was read
        server.fail_with(500); server.recover(); server.stop()             # outages

The JWKS is served at `/jwks` and at Better Auth's path `/api/auth/jwks`.
"""
import base64
import hashlib
import hmac
import itertools
import json
import threading
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

JWKS_PATHS = ("/jwks", "/api/auth/jwks")
RSA_POOL_SIZE = 4


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _int_bytes(number: int, length: int | None = None) -> bytes:
    return number.to_bytes(length or (number.bit_length() + 7) // 8, "big")


@dataclass
class TestKey:
    """A signing key pair and its public JWK (as Better Auth publishes it: no `use` field)."""

    __test__ = False  # not a pytest test class

    kid: str
    alg: str
    private_key: Any
    jwk: dict[str, Any] = field(repr=False)

    def sign(self, claims: dict[str, Any], *, alg: str | None = None, kid: str | None = "default", **headers: Any) -> str:
        """A token signed with this key; `alg`/`kid` override the header (kid=None leaves it out)."""
        header = {**headers}
        if kid is not None:
            header["kid"] = self.kid if kid == "default" else kid
        return jwt.encode(claims, self.private_key, algorithm=alg or self.alg, headers=header)

    @property
    def public_pem(self) -> bytes:
        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


_RSA_POOL: list[rsa.RSAPrivateKey] = []
_rsa_next = itertools.count()


def _rsa_private_key() -> rsa.RSAPrivateKey:
    """RSA 2048 keys take ~0.1-0.5 s to make: reuse a small pool, round-robin, so that the few RSA
    keys one test makes are still distinct from each other."""
    index = next(_rsa_next) % RSA_POOL_SIZE
    while len(_RSA_POOL) <= index:
        _RSA_POOL.append(rsa.generate_private_key(public_exponent=65537, key_size=2048))
    return _RSA_POOL[index]


def generate_key(alg: str, kid: str | None = None, *, declare_alg: bool = True) -> TestKey:
    """EdDSA (Ed25519), ES256 (P-256), RS256 or PS256 (RSA 2048)."""
    kid = kid or f"{alg.lower()}-{uuid.uuid4().hex[:8]}"
    if alg == "EdDSA":
        private_key = ed25519.Ed25519PrivateKey.generate()
        raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        jwk = {"alg": "EdDSA", "crv": "Ed25519", "x": b64url(raw), "kty": "OKP", "kid": kid}
    elif alg == "ES256":
        private_key = ec.generate_private_key(ec.SECP256R1())
        numbers = private_key.public_key().public_numbers()
        jwk = {
            "alg": "ES256", "crv": "P-256", "kty": "EC", "kid": kid,
            "x": b64url(_int_bytes(numbers.x, 32)), "y": b64url(_int_bytes(numbers.y, 32)),
        }
    elif alg in ("RS256", "PS256"):
        private_key = _rsa_private_key()
        numbers = private_key.public_key().public_numbers()
        jwk = {"alg": alg, "kty": "RSA", "kid": kid, "n": b64url(_int_bytes(numbers.n)), "e": b64url(_int_bytes(numbers.e))}
    else:
        raise ValueError(f"unsupported test key algorithm {alg}")
    if not declare_alg:
        del jwk["alg"]
    return TestKey(kid, alg, private_key, jwk)


def forge_hmac_token(claims: dict[str, Any], key: bytes, *, alg: str = "HS256", **headers: Any) -> str:
    """An HMAC token signed with any bytes as the key (PyJWT refuses PEM keys; an attacker does not)."""
    digest = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}[alg]
    header = {"alg": alg, "typ": "JWT", **headers}
    signing_input = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    signature = hmac.new(key, signing_input.encode(), digest).digest()
    return signing_input + "." + b64url(signature)


def unsigned_token(claims: dict[str, Any], **headers: Any) -> str:
    """An `alg: none` token: header and claims, empty signature."""
    header = {"alg": "none", "typ": "JWT", **headers}
    return b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode()) + "."


class JwksServer:
    """A JWKS endpoint on 127.0.0.1 (random port) in a background thread."""

    def __init__(self) -> None:
        self.keys: list[TestKey] = []
        self.fetches = 0
        self.paths: list[str] = []  # every path requested, in order
        self.failure_status: int | None = None
        self.raw_document: Any = None  # served instead of the keys when set (malformed JWKS tests)
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        self._running = True

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def jwks_url(self) -> str:
        return self.base_url + "/jwks"

    def add_key(self, alg: str, kid: str | None = None, *, declare_alg: bool = True) -> TestKey:
        key = generate_key(alg, kid, declare_alg=declare_alg)
        with self._lock:
            self.keys.append(key)
        return key

    def remove_key(self, key: TestKey) -> None:
        with self._lock:
            self.keys.remove(key)

    def document(self) -> Any:
        with self._lock:
            if self.raw_document is not None:
                return self.raw_document
            return {"keys": [key.jwk for key in self.keys]}

    def fail_with(self, status: int) -> None:
        self.failure_status = status

    def recover(self) -> None:
        self.failure_status = None

    def stop(self) -> None:
        """Stop listening: fetches then fail with 'connection refused'."""
        if self._running:
            self._running = False
            self._httpd.shutdown()
            self._httpd.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> "JwksServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def _handler_for(server: JwksServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            with server._lock:
                server.paths.append(self.path)
            if self.path.split("?")[0] not in JWKS_PATHS:
                self._send(404, {"error": "not found"})
                return
            with server._lock:
                server.fetches += 1
            if server.failure_status is not None:
                self._send(server.failure_status, {"error": "unavailable"})
                return
            self._send(200, server.document())

        def _send(self, status: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # keep the test output quiet
            pass

    return Handler
