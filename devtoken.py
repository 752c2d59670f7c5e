"""Print a development token for a user, signed with BETTER_AUTH_SECRET (from the env or .env).

    python devtoken.py alice [--email a@example.com] [--name Alice] [--minutes 60]
"""
import argparse
import time

import jwt

from config import Settings


def mint_token(settings: Settings, user_id: str, *, minutes: int = 60, **claims: str) -> str:
    if settings.better_auth_secret is None:
        raise SystemExit("BETTER_AUTH_SECRET is not set: run `make run` once (it writes .env) or set it.")
    now = int(time.time())
    payload = {"sub": user_id, "iat": now, "exp": now + minutes * 60, **claims}
    if settings.expected_issuers:
        payload["iss"] = settings.expected_issuers[0]
    if settings.expected_audiences:
        payload["aud"] = settings.expected_audiences[0]
    return jwt.encode(payload, settings.better_auth_secret.get_secret_value(), algorithm="HS256")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("user_id")
    parser.add_argument("--email")
    parser.add_argument("--name")
    parser.add_argument("--minutes", type=int, default=60)
    args = parser.parse_args()
    extra = {key: value for key, value in (("email", args.email), ("name", args.name)) if value}
    print(mint_token(Settings(), args.user_id, minutes=args.minutes, **extra))


if __name__ == "__main__":
    main()
