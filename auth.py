"""Who is calling: Better Auth JWTs, verified with the shared secret and/or the JWKS."""
import json
import logging
import math
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import Depends, Request
from fastapi.security import HTTPBearer
from starlette.concurrency import run_in_threadpool

from config import Settings
from errors import Unauthorized

log = logging.getLogger("task_api.auth")

MAX_TOKEN_BYTES = 8 * 1024
HMAC_ALGORITHMS = ("HS256", "HS384", "HS512")
# What each kind of public key may sign with. The key decides, never the token header alone.
ALGORITHMS_BY_KEY = {
    ("OKP", "Ed25519"): ("EdDSA",),
    ("EC", "P-256"): ("ES256",),
    ("RSA", None): ("RS256", "PS256"),
}
PUBLIC_KEY_ALGORITHMS = tuple(alg for algs in ALGORITHMS_BY_KEY.values() for alg in algs)
VERIFIED_CACHE_SIZE = 10_000
# How long a verified token may skip the signature check; bounds how late a key removed
# from the JWKS stops being honoured. Expiry is still checked on every request.
VERIFIED_CACHE_SECONDS = 60.0



@dataclass(frozen=True)
class SigningKey:
    key: jwt.PyJWK
    algorithms: tuple[str, ...]


@dataclass(frozen=True)
class Principal:
    user_id: str
    email: str | None
    name: str | None
    # False only when the token says the email is not verified (`email_verified` / Better Auth's
    # `emailVerified`); a token that says nothing about it (a shared-secret dev token) counts as verified.
    email_verified: bool = True


class JwksKeys:
    """Better Auth's public keys by `kid`: cached, refetched on an unknown `kid` at most once per
    `refetch_min_seconds`, refreshed after `max_age_seconds`, and kept when the endpoint is down."""

    def __init__(self, url: str, *, refetch_min_seconds: float, max_age_seconds: float, timeout_seconds: float):
        self.url = url
        self.refetch_min_seconds = refetch_min_seconds
        self.max_age_seconds = max_age_seconds
        self.timeout_seconds = timeout_seconds
        self._keys: dict[str | None, SigningKey] = {}
        self._fetched_at = -math.inf
        self._attempted_at = -math.inf
        self._lock = threading.Lock()

    def key_for(self, kid: str | None, algorithm: str) -> SigningKey | None:
        key = self._find(kid, algorithm)
        is_stale = time.monotonic() - self._fetched_at > self.max_age_seconds
        if key is None:
            self.refresh(wait=True)
            key = self._find(kid, algorithm)
        elif is_stale and self._may_refetch():
            # Keep serving the cached key; refresh in the background so no request waits on it.
            threading.Thread(target=self.refresh, kwargs={"wait": False}, daemon=True).start()
        return key

    def _may_refetch(self) -> bool:
        return time.monotonic() - self._attempted_at >= self.refetch_min_seconds and not self._lock.locked()

    def refresh(self, *, wait: bool) -> None:
        if not self._lock.acquire(blocking=wait):
            return
        try:
            now = time.monotonic()
            if now - self._attempted_at < self.refetch_min_seconds:
                return
            self._attempted_at = now
            keys = self._fetch()
            if keys:
                self._keys, self._fetched_at = keys, time.monotonic()
        finally:
            self._lock.release()

    def _find(self, kid: str | None, algorithm: str) -> SigningKey | None:
        keys = self._keys
        if kid is None:  # no kid: acceptable only when exactly one key can sign with this algorithm
            candidates = [key for key in keys.values() if algorithm in key.algorithms]
            return candidates[0] if len(candidates) == 1 else None
        return keys.get(kid)

    def _fetch(self) -> dict[str | None, SigningKey]:
        try:
            request = urllib.request.Request(self.url, headers={"Accept": "application/json"})
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:
                document = json.load(response)
        except (OSError, ValueError) as exc:
            log.warning("jwks fetch failed; keeping %d cached keys", len(self._keys), extra={"error": str(exc)})
            return {}
        keys: dict[str | None, SigningKey] = {}
        entries = document.get("keys") if isinstance(document, dict) else None
        for entry in entries if isinstance(entries, list) else []:
            try:  # a malformed entry (wrong types, bad key material) is skipped; the others still count
                algorithms = allowed_algorithms(entry) if isinstance(entry, dict) else ()
                kid = entry.get("kid") if algorithms else None
                if not algorithms or entry.get("use", "sig") != "sig" or not isinstance(kid, (str, type(None))):
                    continue  # a key type we do not verify with
                keys[kid] = SigningKey(jwt.PyJWK(entry, algorithm=algorithms[0]), algorithms)
            except (jwt.PyJWTError, TypeError, ValueError, KeyError):
                continue
        if not keys:
            log.warning("jwks document has no usable signing keys", extra={"url": self.url})
        return keys


def allowed_algorithms(jwk: dict[str, Any]) -> tuple[str, ...]:
    allowed = ALGORITHMS_BY_KEY.get((jwk.get("kty"), jwk.get("crv")), ())
    declared = jwk.get("alg")
    return (declared,) if declared in allowed else () if declared else allowed


class TokenVerifier:
    def __init__(self, settings: Settings):
        self.secret = settings.better_auth_secret.get_secret_value() if settings.better_auth_secret else None
        self.jwks = (
            JwksKeys(
                settings.jwks_endpoint,
                refetch_min_seconds=settings.jwks_refetch_min_seconds,
                max_age_seconds=settings.jwks_max_age_seconds,
                timeout_seconds=settings.jwks_fetch_timeout_seconds,
            )
            if settings.jwks_endpoint
            else None
        )
        self.issuers = settings.expected_issuers
        self.audiences = settings.expected_audiences
        self.leeway = settings.jwt_leeway_seconds
        self._verified: dict[str, tuple[Principal, float, float, float]] = {}
        self._verified_lock = threading.Lock()

    def verify(self, token: str) -> Principal:
        cached = self.cached(token)
        if cached is not None:
            return cached
        claims = self._decode(token)
        principal = Principal(
            user_id=claims["sub"],
            email=_optional_str(claims.get("email")),
            name=_optional_str(claims.get("name")),
            email_verified=_email_verified(claims),
        )
        self._remember(token, principal, claims)
        return principal

    def _decode(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_BYTES:
            raise Unauthorized("Token is larger than 8 KiB; this is not a Better Auth session token.", token_given=True)
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise Unauthorized("Malformed token: expected a JWT (three base64url parts).", token_given=True)
        algorithm = header.get("alg")
        key = self._key_for(algorithm, header.get("kid"))
        try:
            claims = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                leeway=self.leeway,
                issuer=self.issuers,
                audience=self.audiences,
                options={"require": ["exp", "sub"], "verify_aud": self.audiences is not None},
            )
        except jwt.PyJWTError as exc:
            raise Unauthorized(_explain(exc), token_given=True) from None
        if not isinstance(claims.get("sub"), str) or not claims["sub"].strip():
            raise Unauthorized("Token's 'sub' claim must be a non-empty string (the user id).", token_given=True)
        return claims

    def _key_for(self, algorithm: Any, kid: Any) -> Any:
        if algorithm in HMAC_ALGORITHMS:
            if self.secret is None:
                raise Unauthorized(
                    "HMAC-signed tokens are not accepted: this service verifies Better Auth's public keys (JWKS).",
                    token_given=True,
                )
            return self.secret
        if algorithm in PUBLIC_KEY_ALGORITHMS:
            if self.jwks is None:
                raise Unauthorized(
                    "Public-key tokens are not accepted: no JWKS is configured (set BETTER_AUTH_URL or JWKS_URL).",
                    token_given=True,
                )
            key = self.jwks.key_for(kid if isinstance(kid, str) else None, algorithm)
            if key is None:
                raise Unauthorized("Token was signed by a key this service does not know (kid).", token_given=True)
            if algorithm not in key.algorithms:
                raise Unauthorized("Token algorithm does not match its signing key.", token_given=True)
            return key.key.key  # the raw public key: PyJWT then checks it against `algorithms`
        accepted = ", ".join((HMAC_ALGORITHMS if self.secret else ()) + (PUBLIC_KEY_ALGORITHMS if self.jwks else ()))
        raise Unauthorized(f"Unsupported token algorithm; accepted: {accepted}.", token_given=True)

    def cached(self, token: str) -> Principal | None:
        entry = self._verified.get(token)
        if entry is None:
            return None
        principal, expires_at, not_before, cached_until = entry
        now = time.time()
        if now >= cached_until or now >= expires_at + self.leeway or now < not_before - self.leeway:
            self._verified.pop(token, None)
            return None  # decode again: it raises the precise error, or re-caches
        return principal

    def _remember(self, token: str, principal: Principal, claims: dict[str, Any]) -> None:
        try:
            expires_at, not_before = float(claims["exp"]), float(claims.get("nbf", -math.inf))
        except (OverflowError, TypeError, ValueError):
            return  # valid but exotic (e.g. exp=10**400): verify it in full on every request instead
        entry = (principal, expires_at, not_before, time.time() + VERIFIED_CACHE_SECONDS)
        with self._verified_lock:
            if len(self._verified) >= VERIFIED_CACHE_SIZE:
                self._verified.pop(next(iter(self._verified)))
            self._verified[token] = entry


def _explain(exc: jwt.PyJWTError) -> str:
    if isinstance(exc, jwt.ExpiredSignatureError):
        return "Token has expired. Get a new one from Better Auth (sign in again)."
    if isinstance(exc, jwt.ImmatureSignatureError):
        return "Token is not valid yet (nbf or iat is in the future). Check the clocks."
    if isinstance(exc, jwt.MissingRequiredClaimError):
        return f"Token is missing the required '{exc.claim}' claim."
    if isinstance(exc, jwt.InvalidIssuerError):
        return "Token issuer (iss) is not the one this service trusts."
    if isinstance(exc, jwt.InvalidAudienceError):
        return "Token audience (aud) is not this service."
    if isinstance(exc, jwt.InvalidSignatureError):
        return "Token signature is invalid."
    if isinstance(exc, jwt.exceptions.InvalidSubjectError):
        return "Token's 'sub' claim must be a non-empty string (the user id)."
    if isinstance(exc, jwt.exceptions.InvalidIssuedAtError):
        return "Token's 'iat' claim must be a number (seconds since the epoch)."
    if isinstance(exc, jwt.DecodeError) and "claim (" in str(exc):  # PyJWT: "... claim (exp) must be an integer."
        claim = "exp" if "(exp)" in str(exc) else "nbf"
        return f"Token's '{claim}' claim must be a number (seconds since the epoch)."
    if isinstance(exc, jwt.DecodeError):
        return "Malformed token: its parts are not valid base64url JSON."
    return "Token is invalid."


def _optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _email_verified(claims: dict[str, Any]) -> bool:
    for name in ("email_verified", "emailVerified"):
        if name in claims:
            return claims[name] is True or claims[name] == "true"
    return True


async def authenticate(authorization: str | None, verifier: TokenVerifier) -> Principal:
    """The caller of an `Authorization` header, or Unauthorized saying what is wrong. The REST routes
    and /mcp both come here: one way to read a token."""
    if not authorization:
        raise Unauthorized("Missing Authorization header. Send: Authorization: Bearer <JWT>.", token_given=False)
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise Unauthorized("Authorization header must be 'Bearer <JWT>'.", token_given=False)
    # A token seen before costs a dict lookup; a new one is verified in the threadpool (a signature
    # check, maybe a JWKS fetch), never on the event loop.
    return verifier.cached(token) or await run_in_threadpool(verifier.verify, token)


class BetterAuthBearer(HTTPBearer):
    """The caller's identity from `Authorization: Bearer <JWT>`, as one dependency that is also the
    security scheme the OpenAPI document shows (one dependency instead of two per request)."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        # The request's state, the dict behind `request.state`, as the rate limiter and the access log
        # use it (`request.state` answers a name it lacks by raising and catching AttributeError).
        state = request.scope.setdefault("state", {})
        principal = state.get("principal")  # verified by the rate limiter, this request
        if principal is None:
            principal = await authenticate(request.headers.get("authorization"), request.app.state.token_verifier)
        state["user_id"] = principal.user_id  # for the access log and the rate limit
        return principal


async def verify_token(request: Request, token: str) -> Principal:
    """The caller of a bare token (the SSE stream's `?access_token=`): the same check as the header."""
    principal = await authenticate(f"Bearer {token}", request.app.state.token_verifier)
    request.state.user_id = principal.user_id  # for the access log and the rate limit
    return principal


def expiry_of(verified_token: str) -> float:
    """The `exp` of a token already verified (seconds since the epoch; infinity for one too far
    ahead to be a float, such as 10**400, which PyJWT accepts)."""
    try:
        return float(jwt.decode(verified_token, options={"verify_signature": False})["exp"])
    except OverflowError:
        return math.inf


current_principal = BetterAuthBearer(
    scheme_name="BetterAuthJWT",
    bearerFormat="JWT",
    description="A JWT from Better Auth (jwt plugin, or HS256 with the shared BETTER_AUTH_SECRET).",
)


CurrentUser = Annotated[Principal, Depends(current_principal)]
