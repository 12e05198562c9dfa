"""The credential a request presents (a bearer token or the session cookie), what one
issued by auth looks like, and the digest under which auth stores and revocations name it."""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import urlsplit

from litestar import Request


def cookie_name(public_url: str) -> str:
    """``__Host-mf_session`` behind https, ``mf_session`` otherwise (API.md)."""
    return "__Host-mf_session" if urlsplit(public_url).scheme == "https" else "mf_session"


# Auth issues session tokens of 43 URL-safe base64 characters and API keys of 47 (``mfk_``
# and 43 more). A credential longer than this or with any other character is none that auth
# issued: it is refused without asking auth, so that no junk, however large, reaches it.
# The room to spare lets auth change its formats without a lockstep deploy of its callers.
MAX_CREDENTIAL_LENGTH = 256
_CREDENTIAL_SHAPE = re.compile(rf"[A-Za-z0-9_-]{{1,{MAX_CREDENTIAL_LENGTH}}}")


def could_be_credential(value: str) -> bool:
    """Whether ``value`` has the shape of a credential auth issues (else: session_invalid)."""
    return _CREDENTIAL_SHAPE.fullmatch(value) is not None


def credential_digest(credential: str) -> str:
    """How auth stores a credential and how revocations name it: hex SHA-256."""
    return hashlib.sha256(credential.encode()).hexdigest()


def _bearer(request: Request[Any, Any, Any]) -> str | None:
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def presented_credential(request: Request[Any, Any, Any], public_url: str) -> str | None:
    """The bearer token or session cookie the request carries, if any."""
    return _bearer(request) or request.cookies.get(cookie_name(public_url)) or None
