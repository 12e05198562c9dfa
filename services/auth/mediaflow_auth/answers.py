"""The bodies auth's routes answer with (API.md, "Auth"): each route builds its answer as one
of these types, and the published schema is generated from the same types."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

from mediaflow_auth import api_keys
from mediaflow_libs.openapi import DATE_TIME, UUID, User

# (No docstrings on these types: msgspec would publish them as the schemas' descriptions.)


class Session(msgspec.Struct):
    id: str
    # null when the credential is an API key, which does not expire
    expires_at: DATE_TIME | None


class SignedIn(msgspec.Struct):
    user: User
    session: Session


class SignedUp(msgspec.Struct):
    user: User
    session: Session | msgspec.UnsetType = msgspec.UNSET


class ApiKey(msgspec.Struct):
    id: UUID
    name: str
    created_at: DATE_TIME
    last_used_at: DATE_TIME | None


class NewApiKey(msgspec.Struct):
    id: UUID
    name: str
    key: Annotated[
        str,
        Meta(
            pattern=api_keys.KEY_PATTERN,
            description="The key itself: shown this once, never again",
        ),
    ]
    created_at: DATE_TIME


class ApiKeyPage(msgspec.Struct):
    items: list[ApiKey]
