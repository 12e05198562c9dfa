"""The bodies auth's routes take (API.md, "Auth"), each field with the problem a bad value
gets; the published schema is generated from these types."""

from __future__ import annotations

import re
from typing import Annotated

import msgspec
from msgspec import Meta

from mediaflow_auth import api_keys, passwords
from mediaflow_libs.request_bodies import Fallback, Refusal

MAX_EMAIL_LENGTH = 254
MAX_NAME_LENGTH = 200
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s.]+$")

_EMAIL_DOCS = Meta(
    description="The account's email address",
    extra_json_schema={"format": "email", "maxLength": MAX_EMAIL_LENGTH},
)
_PASSWORD = Meta(min_length=passwords.MIN_PASSWORD_LENGTH, max_length=passwords.MAX_PASSWORD_LENGTH)
_PASSWORD_DOCS = Meta(
    extra_json_schema={
        "minLength": passwords.MIN_PASSWORD_LENGTH,
        "maxLength": passwords.MAX_PASSWORD_LENGTH,
    }
)


def _not_text(field: str) -> str:
    return f"`{field}` must be a string of characters, without NUL."


def _email_address(value: str) -> str:
    email = value.strip()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.match(email):
        raise ValueError("not an email address")
    return email


def _trimmed_name(value: str) -> str:
    if not value.strip():
        raise ValueError("a name of spaces")
    return value.strip()


class SignUp(msgspec.Struct):
    email: Annotated[
        str,
        _EMAIL_DOCS,
        Refusal(
            422,
            "invalid_email",
            _not_text("email"),
            out_of_range="`email` must be an email address.",
            check=_email_address,  # trimmed
        ),
    ]
    password: Annotated[
        str,
        _PASSWORD,
        Refusal(
            422,
            "weak_password",
            _not_text("password"),
            out_of_range=f"The password needs {passwords.MIN_PASSWORD_LENGTH} to "
            f"{passwords.MAX_PASSWORD_LENGTH} characters.",
        ),
    ]
    name: Annotated[
        Annotated[str, Meta(max_length=MAX_NAME_LENGTH)] | None,
        Refusal(
            422,
            "invalid_name",
            _not_text("name"),
            out_of_range=f"`name` may have at most {MAX_NAME_LENGTH} characters.",
        ),
    ] = None


class SignIn(msgspec.Struct):
    # No account has an email or password that is not text: such a sign-in just fails
    # (and is counted as a failure), so neither is refused for its type or length.
    email: Annotated[str, _EMAIL_DOCS, Fallback("")]
    password: Annotated[str, _PASSWORD_DOCS, Fallback("")]


_KEY_NAME = f"`name` must be 1 to {api_keys.MAX_NAME_LENGTH} characters."


class CreateApiKey(msgspec.Struct):
    name: Annotated[
        str,
        Meta(min_length=1, max_length=api_keys.MAX_NAME_LENGTH),
        Refusal(422, "invalid_name", _KEY_NAME, check=_trimmed_name),
    ]


class SessionCheck(msgspec.Struct):
    # Any string gets its answer from the session check (unknown ones 401 session_invalid).
    credential: Annotated[
        str | None,
        Refusal(401, "session_invalid", "The credential is not a string.", text=False),
    ] = None
