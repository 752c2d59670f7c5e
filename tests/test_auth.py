"""CONTRACT §1, identity and authentication, from the outside: HTTP through TestClient.

Tests on the shared `client` (HS256 with the suite's secret) run on SQLite and PostgreSQL. Tests that
need their own settings (JWKS, issuer, leeway...) build an app of their own and call `/api/me`, which
never touches the database, so they run once, on SQLite.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from fastapi.testclient import TestClient
from pydantic import ValidationError

from conftest import TEST_SECRET, make_settings
from config import Settings
from jwks_server import JwksServer, b64url, forge_hmac_token, generate_key, unsigned_token
from main import create_app

PROJECT_DIR = Path(__file__).resolve().parent.parent
TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
DROP = object()  # claims(exp=DROP): leave the claim out
PUBLIC_KEY_ALGORITHMS = ["EdDSA", "ES256", "RS256", "PS256"]


# ---------------------------------------------------------------------------------------------
# helpers


def claims(sub: Any = "user_1", **extra: Any) -> dict[str, Any]:
    """Valid claims for an hour; override any, drop one with DROP."""
    now = int(time.time())
    values = {"sub": sub, "iat": now, "exp": now + 3600, **extra}
    return {key: value for key, value in values.items() if value is not DROP}


def hs_token(sub: Any = "user_1", *, secret: str = TEST_SECRET, algorithm: str = "HS256", **extra: Any) -> str:
    return jwt.encode(claims(sub, **extra), secret, algorithm=algorithm)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def me(client: TestClient, token: str):
    return client.get("/api/me", headers=bearer(token))


def assert_user(response, user_id: str) -> None:
    assert response.status_code == 200, response.text
    assert response.json()["user_id"] == user_id


def assert_unauthorized(response, *words: str, token: str | None = None, token_given: bool = True) -> str:
    """401 UNAUTHORIZED per §5, the right challenge, a message naming the problem, no token echoed."""
    assert response.status_code == 401, response.text
    body = response.json()
    assert set(body) == {"detail", "error_code", "timestamp"}, body
    assert body["error_code"] == "UNAUTHORIZED"
    assert TIMESTAMP.match(body["timestamp"]), body
    challenge = response.headers["WWW-Authenticate"]
    if token_given:
        assert challenge.startswith("Bearer") and 'error="invalid_token"' in challenge, challenge
    else:
        assert challenge == "Bearer"
    detail = body["detail"].lower()
    for word in words:
        assert word.lower() in detail, f"{word!r} not in {body['detail']!r}"
    if token:
        assert_not_echoed(response, token)
    return body["detail"]


def assert_not_echoed(response, token: str) -> None:
    secrets_ = [token] + [part for part in token.split(".") if len(part) >= 8]
    exposed = response.text + "\n" + "\n".join(response.headers.values())
    for secret in secrets_:
        assert secret not in exposed, "the response echoes the token"


@pytest.fixture(scope="module")
def sqlite_url(scratch_database) -> str:
    return scratch_database("sqlite")


@pytest.fixture
def make_client(sqlite_url):
    """`make_client(jwks_url=..., better_auth_secret=None)`: an app of its own on SQLite.

    No lifespan (no `with`), so the JWKS is fetched only by requests and fetch counts are exact."""

    def make(**overrides: Any) -> TestClient:
        return TestClient(create_app(make_settings(sqlite_url, **overrides)), raise_server_exceptions=False)

    return make


@pytest.fixture
def jwks():
    with JwksServer() as server:
        yield server


@pytest.fixture
def jwks_client(jwks, make_client):
    """JWKS only (no shared secret), keys re-fetched on an unknown kid without delay."""

    def make(**overrides: Any) -> TestClient:
        values = {"jwks_url": jwks.jwks_url, "better_auth_secret": None, "jwks_refetch_min_seconds": 0, **overrides}
        return make_client(**values)

    return make


# ---------------------------------------------------------------------------------------------
# shared secret: HS256 / HS384 / HS512, the owner is `sub`


@pytest.mark.parametrize("algorithm", ["HS256", "HS384", "HS512"])
def test_shared_secret_algorithms_are_accepted(client, algorithm):
    assert_user(me(client, hs_token("user_hs", algorithm=algorithm)), "user_hs")


def test_task_owner_is_the_token_sub(alice, bob):
    task = alice.create_task(title="mine")
    assert task["user_id"] == alice.user_id
    assert [t["id"] for t in alice.get("/api/tasks").json()] == [task["id"]]
    assert bob.get("/api/tasks").json() == []
    assert bob.get(f"/api/tasks/{task['id']}").status_code == 404


def test_me_returns_user_id_email_and_name_from_the_token(client):
    token = hs_token("user_me", email="me@example.com", name="Me Myself")
    response = me(client, token)
    assert response.status_code == 200, response.text
    assert response.json() == {"user_id": "user_me", "email": "me@example.com", "name": "Me Myself"}


def test_me_has_null_email_and_name_when_the_token_has_none(client):
    response = me(client, hs_token("user_bare"))
    assert response.json() == {"user_id": "user_bare", "email": None, "name": None}


def test_me_has_null_email_when_the_claim_is_not_a_string(client):
    response = me(client, hs_token("user_odd", email=42, name=["x"]))
    assert response.json() == {"user_id": "user_odd", "email": None, "name": None}


# ---------------------------------------------------------------------------------------------
# missing or malformed credentials


def test_missing_authorization_header_is_401(client):
    response = client.get("/api/tasks")
    assert_unauthorized(response, "missing", token_given=False)


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNzd29yZA==", "Token abc.def.ghi", "eyJhbGciOiJIUzI1NiJ9"])
def test_non_bearer_scheme_is_401(client, header):
    response = client.get("/api/tasks", headers={"Authorization": header})
    assert_unauthorized(response, "bearer", token_given=False)
    assert header.split()[-1] not in response.text


def test_bearer_without_token_is_401(client):
    response = client.get("/api/tasks", headers={"Authorization": "Bearer "})
    assert_unauthorized(response, "bearer", token_given=False)


def test_bearer_scheme_is_case_insensitive(client):
    response = client.get("/api/me", headers={"Authorization": f"bearer {hs_token('user_case')}"})
    assert_user(response, "user_case")


@pytest.mark.parametrize(
    "token",
    [
        "not-a-jwt",
        "only.two",
        "a.b.c",
        b64url(b"not json") + "." + b64url(b"{}") + ".c2ln",
        b64url(b'["a list"]') + "." + b64url(b"{}") + ".c2ln",
        "four.parts.in.token",
    ],
    ids=["no-dots", "two-parts", "garbage-parts", "header-not-json", "header-not-object", "four-parts"],
)
def test_malformed_token_is_401(client, token):
    assert_unauthorized(me(client, token), "malformed", token=token)


def test_token_with_a_payload_that_is_not_json_is_401(client):
    good = hs_token("user_1")
    header, _, signature = good.split(".")
    token = f"{header}.{b64url(b'not json')}.{signature}"
    assert_unauthorized(me(client, token), token=token)


# ---------------------------------------------------------------------------------------------
# the key decides the algorithm


@pytest.mark.parametrize("alg", ["none", "None", "NONE"])
def test_alg_none_is_401(client, alg):
    token = unsigned_token(claims("user_none"))
    if alg != "none":
        token = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode()) + "." + token.split(".", 1)[1]
    assert_unauthorized(me(client, token), "algorithm", token=token)


@pytest.mark.parametrize("alg", ["HS1", "RS512", "ES384", "Ed25519", ""])
def test_algorithm_outside_the_accepted_list_is_401(client, alg):
    token = forge_hmac_token(claims(), TEST_SECRET.encode(), alg="HS256")
    header = b64url(json.dumps({"alg": alg, "typ": "JWT"}).encode())
    token = header + "." + token.split(".", 1)[1]
    assert_unauthorized(me(client, token), "algorithm", token=token)


def test_hmac_token_is_401_when_only_jwks_is_configured(jwks, jwks_client):
    jwks.add_key("EdDSA")
    client = jwks_client()
    token = hs_token("user_1")
    assert_unauthorized(me(client, token), "HMAC", token=token)


def test_public_key_token_is_401_when_only_the_secret_is_configured(client):
    key = generate_key("EdDSA")
    token = key.sign(claims("user_1"))
    assert_unauthorized(me(client, token), "JWKS", token=token)


@pytest.mark.parametrize("alg", ["RS256", "EdDSA", "ES256"])
@pytest.mark.parametrize("mode", ["secret+jwks", "jwks-only"])
def test_hmac_token_signed_with_the_public_key_is_401(jwks, make_client, alg, mode):
    """Algorithm confusion: the attacker HMACs with the public key (PEM or JWK), naming its kid."""
    key = jwks.add_key(alg)
    client = make_client(
        jwks_url=jwks.jwks_url,
        jwks_refetch_min_seconds=0,
        **({} if mode == "secret+jwks" else {"better_auth_secret": None}),
    )
    assert_user(me(client, key.sign(claims("user_1"))), "user_1")  # the key is known and cached
    for hmac_key in (key.public_pem, json.dumps(key.jwk).encode(), key.jwk["x" if "x" in key.jwk else "n"].encode()):
        for hmac_alg in ("HS256", "HS512"):
            token = forge_hmac_token(claims("attacker"), hmac_key, alg=hmac_alg, kid=key.kid)
            expected = "signature" if mode == "secret+jwks" else "HMAC"
            assert_unauthorized(me(client, token), expected, token=token)


@pytest.mark.parametrize(
    ("key_alg", "header_alg", "signer_alg"),
    [("RS256", "ES256", "ES256"), ("EdDSA", "RS256", "RS256"), ("ES256", "EdDSA", "EdDSA"), ("RS256", "PS256", "PS256")],
    ids=["rsa-kid-es256", "ed25519-kid-rs256", "p256-kid-eddsa", "rs256-key-ps256"],
)
def test_key_used_with_another_algorithm_is_401(jwks, jwks_client, key_alg, header_alg, signer_alg):
    """A token naming a key's kid but an algorithm that key does not sign with."""
    key = jwks.add_key(key_alg)
    signer = generate_key(signer_alg)
    client = jwks_client()
    token = signer.sign(claims("attacker"), kid=key.kid)
    assert jwt.get_unverified_header(token)["alg"] == header_alg
    assert_unauthorized(me(client, token), "algorithm", token=token)


def test_rsa_key_without_declared_alg_accepts_rs256_and_ps256(jwks, jwks_client):
    key = jwks.add_key("RS256", declare_alg=False)
    client = jwks_client()
    assert_user(me(client, key.sign(claims("user_rs"), alg="RS256")), "user_rs")
    assert_user(me(client, key.sign(claims("user_ps"), alg="PS256")), "user_ps")


# ---------------------------------------------------------------------------------------------
# signatures


def test_token_signed_with_another_secret_is_401(client):
    token = hs_token("user_1", secret="another-secret-" + "x1y2z3" * 8)
    assert_unauthorized(me(client, token), "signature", token=token)


def test_token_with_a_tampered_payload_is_401(client):
    header, _, signature = hs_token("user_1").split(".")
    payload = b64url(json.dumps(claims("someone_else")).encode())
    token = f"{header}.{payload}.{signature}"
    assert_unauthorized(me(client, token), "signature", token=token)


def test_token_with_a_wrong_signature_is_401(client):
    header, payload, _ = hs_token("user_1").split(".")
    token = f"{header}.{payload}.{b64url(os.urandom(32))}"
    assert_unauthorized(me(client, token), "signature", token=token)


@pytest.mark.parametrize("alg", PUBLIC_KEY_ALGORITHMS)
def test_public_key_token_signed_by_another_key_with_the_same_kid_is_401(jwks, jwks_client, alg):
    key = jwks.add_key(alg)
    impostor = generate_key(alg)
    token = impostor.sign(claims("attacker"), kid=key.kid)
    assert_unauthorized(me(jwks_client(), token), "signature", token=token)


# ---------------------------------------------------------------------------------------------
# required claims, time claims and leeway (default 30 s)


def test_missing_exp_is_401(client):
    token = hs_token("user_1", exp=DROP)
    assert_unauthorized(me(client, token), "exp", token=token)


def test_missing_sub_is_401(client):
    token = hs_token(DROP)
    assert_unauthorized(me(client, token), "sub", token=token)


@pytest.mark.parametrize("sub", ["", "   ", None], ids=["empty", "blank", "null"])
def test_empty_sub_is_401(client, sub):
    token = hs_token(sub)
    assert_unauthorized(me(client, token), "sub", token=token)


@pytest.mark.parametrize("sub", [123, ["user_1"], {"id": "user_1"}, True], ids=["int", "list", "object", "bool"])
def test_non_string_sub_is_401(client, sub):
    token = hs_token(sub)
    assert_unauthorized(me(client, token), "sub", token=token)


def test_expired_token_is_401(client):
    token = hs_token("user_1", exp=int(time.time()) - 120)
    assert_unauthorized(me(client, token), "expired", token=token)


def test_token_expired_within_the_leeway_is_accepted(client):
    assert_user(me(client, hs_token("user_late", exp=int(time.time()) - 10)), "user_late")


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_token_from_the_future_is_401(client, claim):
    token = hs_token("user_1", **{claim: int(time.time()) + 120})
    assert_unauthorized(me(client, token), "not valid yet", token=token)


@pytest.mark.parametrize("claim", ["nbf", "iat"])
def test_token_from_the_near_future_within_the_leeway_is_accepted(client, claim):
    assert_user(me(client, hs_token("user_skew", **{claim: int(time.time()) + 10})), "user_skew")


@pytest.mark.parametrize("claim", ["exp", "nbf", "iat"])
def test_time_claim_that_is_not_a_number_is_401(client, claim):
    token = hs_token("user_1", **{claim: "tomorrow"})
    assert_unauthorized(me(client, token), claim, token=token)


@pytest.mark.parametrize("values", [{"exp": 10**400}, {"nbf": -(10**400)}], ids=["exp", "nbf"])
def test_extreme_but_valid_time_claims_are_not_a_500(client, values):
    assert_user(me(client, hs_token("user_far", **values)), "user_far")


def test_leeway_is_configurable(make_client):
    client = make_client(jwt_leeway_seconds=0)
    token = hs_token("user_1", exp=int(time.time()) - 5)
    assert_unauthorized(me(client, token), "expired", token=token)


def test_accepted_token_is_rejected_once_it_expires(make_client):
    """The verified-token cache skips the signature check, never the expiry."""
    client = make_client(jwt_leeway_seconds=0)
    exp = int(time.time()) + 2  # 1 to 2 s ahead
    token = hs_token("user_short", exp=exp)
    assert_user(me(client, token), "user_short")
    assert_user(me(client, token), "user_short")  # from the cache
    time.sleep(max(0.0, exp - time.time()) + 0.05)
    assert_unauthorized(me(client, token), "expired", token=token)


# ---------------------------------------------------------------------------------------------
# issuer and audience


@pytest.fixture
def iss_aud_client(make_client):
    return make_client(jwt_issuer="https://auth.example.com", jwt_audience="task-api")


def test_matching_issuer_and_audience_are_accepted(iss_aud_client):
    token = hs_token("user_ia", iss="https://auth.example.com", aud="task-api")
    assert_user(me(iss_aud_client, token), "user_ia")


def test_audience_list_containing_ours_is_accepted(iss_aud_client):
    token = hs_token("user_ia", iss="https://auth.example.com", aud=["other", "task-api"])
    assert_user(me(iss_aud_client, token), "user_ia")


@pytest.mark.parametrize(
    ("overrides", "word"),
    [
        ({"iss": "https://evil.example.com"}, "issuer"),
        ({"iss": DROP}, "iss"),
        ({"aud": "another-api"}, "audience"),
        ({"aud": ["another-api", "third"]}, "audience"),
        ({"aud": DROP}, "aud"),
    ],
    ids=["wrong-iss", "missing-iss", "wrong-aud", "wrong-aud-list", "missing-aud"],
)
def test_wrong_or_missing_issuer_or_audience_is_401(iss_aud_client, overrides, word):
    values = {"iss": "https://auth.example.com", "aud": "task-api", **overrides}
    token = hs_token("user_1", **values)
    assert_unauthorized(me(iss_aud_client, token), word, token=token)


def test_issuer_and_audience_are_not_checked_when_not_configured(client):
    token = hs_token("user_free", iss="https://anyone.example.com", aud="anything")
    assert_user(me(client, token), "user_free")


# ---------------------------------------------------------------------------------------------
# size


def test_token_over_8_kib_is_401(client):
    token = hs_token("user_big", padding="x" * 8200)
    assert len(token) > 8192
    assert_unauthorized(me(client, token), "8 KiB", token=token)


def test_oversized_garbage_is_rejected_without_parsing(client):
    token = "%" * 9000
    assert_unauthorized(me(client, token), "8 KiB", token=token)


def test_token_just_under_8_kib_is_accepted(client):
    base = len(hs_token("user_big", padding=""))
    token = hs_token("user_big", padding="x" * ((8192 - base) * 3 // 4 - 4))
    assert 8000 < len(token) <= 8192
    assert_user(me(client, token), "user_big")


# ---------------------------------------------------------------------------------------------
# JWKS: algorithms, configuration


@pytest.mark.parametrize("alg", PUBLIC_KEY_ALGORITHMS)
def test_jwks_algorithms_are_accepted(jwks, jwks_client, alg):
    key = jwks.add_key(alg)
    assert_user(me(jwks_client(), key.sign(claims("user_pk"))), "user_pk")


def test_jwks_entries_look_like_better_auths(jwks):
    """Guard on the helper: Better Auth's Ed25519 entries carry no `use` field."""
    key = jwks.add_key("EdDSA")
    assert set(key.jwk) == {"alg", "crv", "x", "kty", "kid"}


@pytest.mark.parametrize("alg", PUBLIC_KEY_ALGORITHMS)
def test_better_auth_url_serves_jwks_and_sets_issuer_and_audience(jwks, make_client, alg):
    key = jwks.add_key(alg)
    client = make_client(better_auth_url=jwks.base_url, better_auth_secret=None)
    token = key.sign(claims("user_ba", iss=jwks.base_url, aud=jwks.base_url))
    assert_user(me(client, token), "user_ba")


@pytest.mark.parametrize(
    ("overrides", "word"),
    [
        ({"iss": "https://evil.example.com"}, "issuer"),
        ({"iss": DROP}, "iss"),
        ({"aud": "https://evil.example.com"}, "audience"),
        ({"aud": DROP}, "aud"),
    ],
    ids=["wrong-iss", "missing-iss", "wrong-aud", "missing-aud"],
)
def test_better_auth_url_requires_its_issuer_and_audience(jwks, make_client, overrides, word):
    key = jwks.add_key("EdDSA")
    client = make_client(better_auth_url=jwks.base_url, better_auth_secret=None)
    token = key.sign(claims("user_1", **{"iss": jwks.base_url, "aud": jwks.base_url, **overrides}))
    assert_unauthorized(me(client, token), word, token=token)


def test_better_auth_url_fetches_the_better_auth_jwks_path(jwks, make_client):
    key = jwks.add_key("EdDSA")
    client = make_client(better_auth_url=jwks.base_url + "/", better_auth_secret=None)
    token = key.sign(claims("user_1", iss=jwks.base_url, aud=jwks.base_url))
    assert_user(me(client, token), "user_1")
    assert jwks.paths == ["/api/auth/jwks"]


def test_explicit_issuer_and_audience_override_better_auth_url(jwks, make_client):
    key = jwks.add_key("EdDSA")
    client = make_client(
        better_auth_url=jwks.base_url, better_auth_secret=None, jwt_issuer="issuer-x", jwt_audience="aud-y"
    )
    assert_user(me(client, key.sign(claims("user_1", iss="issuer-x", aud="aud-y"))), "user_1")
    token = key.sign(claims("user_1", iss=jwks.base_url, aud=jwks.base_url))
    assert_unauthorized(me(client, token), "issuer", token=token)


def test_secret_and_jwks_work_at_once(jwks, make_client):
    key = jwks.add_key("EdDSA")
    client = make_client(jwks_url=jwks.jwks_url)
    assert_user(me(client, key.sign(claims("user_pk"))), "user_pk")
    for algorithm in ("HS256", "HS384", "HS512"):
        assert_user(me(client, hs_token("user_hs", algorithm=algorithm)), "user_hs")


# ---------------------------------------------------------------------------------------------
# JWKS: kid, cache, rotation, outages


def test_keys_are_picked_by_kid(jwks, jwks_client):
    first, second = jwks.add_key("EdDSA"), jwks.add_key("EdDSA")
    client = jwks_client()
    assert_user(me(client, first.sign(claims("user_a"))), "user_a")
    assert_user(me(client, second.sign(claims("user_b"))), "user_b")
    token = first.sign(claims("user_a"), kid=second.kid)  # right key material, wrong kid
    assert_unauthorized(me(client, token), "signature", token=token)


def test_keys_of_every_type_in_one_jwks(jwks, jwks_client):
    keys = [jwks.add_key(alg) for alg in PUBLIC_KEY_ALGORITHMS]
    client = jwks_client()
    for key in keys:
        assert_user(me(client, key.sign(claims(f"user_{key.alg}"))), f"user_{key.alg}")
    assert jwks.fetches == 1


def test_jwks_is_cached(jwks, jwks_client):
    key = jwks.add_key("EdDSA")
    client = jwks_client()
    for n in range(5):  # distinct tokens, so each one's signature is checked
        assert_user(me(client, key.sign(claims(f"user_{n}"))), f"user_{n}")
    assert jwks.fetches == 1


def test_unknown_kid_refetches_the_jwks_so_rotation_works(jwks, jwks_client):
    old = jwks.add_key("EdDSA")
    client = jwks_client()
    assert_user(me(client, old.sign(claims("user_1"))), "user_1")
    new = jwks.add_key("EdDSA")  # Better Auth rotated its key
    assert_user(me(client, new.sign(claims("user_2"))), "user_2")
    assert jwks.fetches == 2
    assert_user(me(client, old.sign(claims("user_3"))), "user_3")  # both still published
    assert jwks.fetches == 2


def test_key_removed_from_jwks_is_rejected_after_a_refetch(jwks, jwks_client):
    old = jwks.add_key("EdDSA")
    client = jwks_client()
    assert_user(me(client, old.sign(claims("user_1"))), "user_1")
    jwks.remove_key(old)
    new = jwks.add_key("EdDSA")
    assert_user(me(client, new.sign(claims("user_2"))), "user_2")  # refetch: `old` is gone
    token = old.sign(claims("user_3"))
    assert_unauthorized(me(client, token), "kid", token=token)


def test_unknown_kid_burst_fetches_the_jwks_at_most_once(jwks, jwks_client):
    key = jwks.add_key("EdDSA")
    stranger = generate_key("EdDSA")
    client = jwks_client(jwks_refetch_min_seconds=60)
    for n in range(10):
        token = stranger.sign(claims(f"attacker_{n}"))
        assert_unauthorized(me(client, token), "kid", token=token)
    assert jwks.fetches == 1
    assert_user(me(client, key.sign(claims("user_1"))), "user_1")  # fetched by the first of the burst
    assert jwks.fetches == 1


def test_unknown_kid_refetches_again_once_the_minimum_interval_passed(jwks, jwks_client):
    first = jwks.add_key("EdDSA")
    client = jwks_client(jwks_refetch_min_seconds=0.2)
    assert_user(me(client, first.sign(claims("user_1"))), "user_1")
    rotated = jwks.add_key("EdDSA")
    time.sleep(0.25)
    assert_user(me(client, rotated.sign(claims("user_2"))), "user_2")
    assert jwks.fetches == 2


@pytest.mark.parametrize("outage", ["stopped", "http-500", "not-json"])
def test_cached_keys_keep_working_when_the_jwks_endpoint_is_down(jwks, jwks_client, outage):
    key = jwks.add_key("ES256")
    # max age ~0: every request tries to refresh the keys, so the outage is really hit
    client = jwks_client(jwks_max_age_seconds=0.001)
    assert_user(me(client, key.sign(claims("user_0"))), "user_0")
    if outage == "stopped":
        jwks.stop()
    elif outage == "http-500":
        jwks.fail_with(500)
    else:
        jwks.raw_document = "<html>oops</html>"
    for n in range(1, 4):  # new tokens: their signatures are checked with the cached key
        assert_user(me(client, key.sign(claims(f"user_{n}"))), f"user_{n}")
    stranger = generate_key("ES256")
    token = stranger.sign(claims("attacker"))
    assert_unauthorized(me(client, token), "kid", token=token)
    assert_user(me(client, key.sign(claims("user_4"))), "user_4")


def test_jwks_unreachable_from_the_start_is_401_not_500(make_client):
    client = make_client(jwks_url="http://127.0.0.1:9/jwks", better_auth_secret=None, jwks_fetch_timeout_seconds=1)
    key = generate_key("EdDSA")
    token = key.sign(claims("user_1"))
    assert_unauthorized(me(client, token), "kid", token=token)


def test_jwks_recovering_after_an_outage_is_used(jwks, jwks_client):
    jwks.fail_with(503)
    key = jwks.add_key("EdDSA")
    client = jwks_client()
    token = key.sign(claims("user_1"))
    assert_unauthorized(me(client, token), token=token)
    jwks.recover()
    assert_user(me(client, key.sign(claims("user_2"))), "user_2")


@pytest.mark.parametrize(
    "document",
    [
        {"keys": None},
        {"keys": "nope"},
        {"keys": [None, 1, "x", [], {"kty": ["OKP"]}, {"kid": ["k"], "kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]},
        ["not", "an", "object"],
        {},
    ],
    ids=["keys-null", "keys-string", "junk-entries", "array", "empty"],
)
def test_malformed_jwks_is_401_not_500(jwks, jwks_client, document):
    key = jwks.add_key("EdDSA")
    jwks.raw_document = document
    token = key.sign(claims("user_1"))
    assert_unauthorized(me(jwks_client(), token), "kid", token=token)


def test_unusable_jwks_entries_are_skipped_and_the_others_used(jwks, jwks_client):
    key = jwks.add_key("EdDSA")
    p384 = {"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AAAA", "y": "AAAA", "alg": "ES384"}
    encryption = {**generate_key("RS256").jwk, "use": "enc", "kid": "enc"}
    symmetric = {"kty": "oct", "k": b64url(TEST_SECRET.encode()), "kid": "oct", "alg": "HS256"}
    broken = {"kty": "OKP", "crv": "Ed25519", "x": "!!!", "kid": "broken", "alg": "EdDSA"}
    jwks.raw_document = {"keys": [p384, encryption, symmetric, broken, key.jwk]}
    client = jwks_client()
    assert_user(me(client, key.sign(claims("user_1"))), "user_1")
    forged = forge_hmac_token(claims("attacker"), TEST_SECRET.encode(), kid="oct")
    assert_unauthorized(me(client, forged), token=forged)


# ---------------------------------------------------------------------------------------------
# settings: the service refuses to start without a safe way to verify tokens


@pytest.fixture
def clean_env(monkeypatch):
    for name in ("BETTER_AUTH_SECRET", "BETTER_AUTH_URL", "JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_secret_shorter_than_32_characters_is_refused(clean_env, sqlite_url):
    with pytest.raises(ValidationError) as error:
        make_settings(sqlite_url, better_auth_secret="aB3$" * 7 + "xyz")  # 31 characters
    assert "BETTER_AUTH_SECRET" in str(error.value) and "32" in str(error.value)


def test_secret_of_32_characters_is_accepted(clean_env, sqlite_url):
    secret = "aB3$dE6^gH9*jK2(mN5)pQ8!sT1@vW4#"
    assert len(secret) == 32
    assert make_settings(sqlite_url, better_auth_secret=secret).better_auth_secret.get_secret_value() == secret


def test_short_secret_from_the_environment_is_refused(clean_env, sqlite_url):
    clean_env.setenv("BETTER_AUTH_SECRET", "short-secret")
    with pytest.raises(ValidationError, match="BETTER_AUTH_SECRET"):
        Settings(_env_file=None, database_url=sqlite_url)


@pytest.mark.parametrize("secret", [None, ""], ids=["unset", "empty"])
def test_no_secret_and_no_jwks_is_refused(clean_env, sqlite_url, secret):
    with pytest.raises(ValidationError) as error:
        make_settings(sqlite_url, better_auth_secret=secret)
    message = str(error.value)
    assert "BETTER_AUTH_SECRET" in message and "BETTER_AUTH_URL" in message and "JWKS_URL" in message


@pytest.mark.parametrize(
    "secret",
    ["your-secret-key-here-change-in-production", "a" * 64, "abababababababababababababababab"],
    ids=["placeholder", "one-character", "repetitive"],
)
def test_weak_secret_is_refused(clean_env, sqlite_url, secret):
    with pytest.raises(ValidationError, match="BETTER_AUTH_SECRET"):
        make_settings(sqlite_url, better_auth_secret=secret)


def test_jwks_alone_is_enough_to_start(clean_env, sqlite_url):
    settings = make_settings(sqlite_url, better_auth_secret=None, jwks_url="http://127.0.0.1:9/jwks")
    assert settings.better_auth_secret is None and settings.jwks_endpoint == "http://127.0.0.1:9/jwks"


def test_dev_token_command_prints_a_token_the_service_accepts(make_client):
    env = {**os.environ, "BETTER_AUTH_SECRET": TEST_SECRET}
    for name in ("BETTER_AUTH_URL", "JWKS_URL", "JWT_ISSUER", "JWT_AUDIENCE"):
        env.pop(name, None)
    result = subprocess.run(
        [sys.executable, "devtoken.py", "user_dev", "--email", "dev@example.com"],
        cwd=PROJECT_DIR, env=env, capture_output=True, text=True, timeout=30, check=True,
    )
    token = result.stdout.strip()
    assert token.count(".") == 2
    response = me(make_client(), token)
    assert response.json() == {"user_id": "user_dev", "email": "dev@example.com", "name": None}


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_dev_setup_writes_a_random_secret_once(tmp_path, clean_env):
    def make_env() -> str:
        subprocess.run(
            ["make", "--no-print-directory", "-s", "-f", str(PROJECT_DIR / "Makefile"), "-C", str(tmp_path), ".env"],
            capture_output=True, text=True, timeout=30, check=True,
        )
        return (tmp_path / ".env").read_text()

    first = make_env()
    assert make_env() == first  # generated once, never overwritten
    settings = Settings(_env_file=tmp_path / ".env", database_url="sqlite://")
    assert len(settings.better_auth_secret.get_secret_value()) >= 32
    (tmp_path / ".env").unlink()
    assert make_env() != first  # random


# ---------------------------------------------------------------------------------------------
# both route spellings: authentication comes before the path's user check


def test_user_path_with_own_id_is_allowed(alice):
    task = alice.create_task()
    response = alice.get(f"/api/{alice.user_id}/tasks")
    assert response.status_code == 200
    assert [t["id"] for t in response.json()] == [task["id"]]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_user_path_with_another_users_id_is_403(alice, bob, method):
    response = bob.request(method, f"/api/{alice.user_id}/tasks", json={"title": "intruder"})
    assert response.status_code == 403, response.text
    assert response.json()["error_code"] == "FORBIDDEN"
    assert alice.get("/api/tasks").json() == []


def test_user_path_without_token_is_401_not_403(client, alice):
    response = client.get(f"/api/{alice.user_id}/tasks")
    assert_unauthorized(response, "missing", token_given=False)


def test_user_path_with_a_bad_token_is_401_not_403(client, alice):
    token = hs_token(alice.user_id, secret="another-secret-" + "x1y2z3" * 8)
    response = client.get(f"/api/{alice.user_id}/tasks", headers=bearer(token))
    assert_unauthorized(response, "signature", token=token)


@pytest.mark.parametrize("path", ["/api/tasks", "/api/tasks/1", "/api/tasks/stats", "/api/tags", "/api/me"])
def test_every_api_route_needs_a_token(client, path):
    assert_unauthorized(client.get(path), token_given=False)
