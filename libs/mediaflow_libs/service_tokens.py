"""The tokens that authenticate one service's internal calls to another: short-lived JWTs
signed with the shared service secret."""

from __future__ import annotations

import time

import jwt

SERVICE_TOKEN_AUDIENCE = "mediaflow-internal"  # noqa: S105 - an audience name, not a secret
SERVICE_TOKEN_LIFETIME_SECONDS = 120


def issue_service_token(secret: str, service: str) -> str:
    now = int(time.time())
    claims = {
        "iss": service,
        "aud": SERVICE_TOKEN_AUDIENCE,
        "iat": now,
        "exp": now + SERVICE_TOKEN_LIFETIME_SECONDS,
    }
    return jwt.encode(claims, secret, algorithm="HS256")


def check_service_token(secret: str, token: str) -> str:
    """The calling service's name, or :class:`jwt.InvalidTokenError`."""
    claims = jwt.decode(
        token,
        secret,
        algorithms=["HS256"],
        audience=SERVICE_TOKEN_AUDIENCE,
        options={"require": ["exp", "iat", "iss", "aud"]},
    )
    return str(claims["iss"])
