"""auth's request bodies: each bad field gets API.md's code and detail, the first bad field
in the body's own order is the one reported, and the published schema is the types'."""

from __future__ import annotations

from typing import Any

import pytest

from mediaflow_auth.bodies import CreateApiKey, SessionCheck, SignIn, SignUp
from mediaflow_auth.openapi import document
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.request_bodies import typed_body

NOT_TEXT = "`{}` must be a string of characters, without NUL."
NOT_EMAIL = (422, "invalid_email", "`email` must be an email address.")
SHORT = (422, "weak_password", "The password needs 8 to 1024 characters.")
GOOD = {"email": "a@example.com", "password": "a long passphrase"}


def _refusal(body_type: type[Any], raw: dict[str, Any]) -> tuple[int, str, str]:
    with pytest.raises(ProblemError) as refused:
        typed_body(body_type, raw)
    return refused.value.status_code, refused.value.code, refused.value.detail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"password": "a long passphrase"}, (422, "invalid_email", NOT_TEXT.format("email"))),
        (GOOD | {"email": 5}, (422, "invalid_email", NOT_TEXT.format("email"))),
        (GOOD | {"email": "a\x00@example.com"}, (422, "invalid_email", NOT_TEXT.format("email"))),
        (GOOD | {"email": "\ud800@example.com"}, (422, "invalid_email", NOT_TEXT.format("email"))),
        (GOOD | {"email": "nobody"}, NOT_EMAIL),
        (GOOD | {"email": "   "}, NOT_EMAIL),
        (GOOD | {"email": "a@" + "b" * 250 + ".com"}, NOT_EMAIL),
        # The email is checked before the password, whatever order the body has.
        ({"password": "short", "email": "nobody"}, NOT_EMAIL),
        ({"email": "a@example.com"}, (422, "weak_password", NOT_TEXT.format("password"))),
        (GOOD | {"password": None}, (422, "weak_password", NOT_TEXT.format("password"))),
        (GOOD | {"password": "short\x00"}, (422, "weak_password", NOT_TEXT.format("password"))),
        (GOOD | {"password": "short"}, SHORT),
        (GOOD | {"password": "p" * 1025}, SHORT),
        (GOOD | {"name": 7}, (422, "invalid_name", NOT_TEXT.format("name"))),
        (
            GOOD | {"name": "n" * 201},
            (422, "invalid_name", "`name` may have at most 200 characters."),
        ),
    ],
)
def test_sign_up_refuses_each_bad_field_as_the_contract_says(
    raw: dict[str, Any], expected: tuple[int, str, str]
) -> None:
    assert _refusal(SignUp, raw) == expected


def test_sign_up_takes_a_trimmed_email_and_ignores_unknown_fields() -> None:
    body = typed_body(SignUp, GOOD | {"email": " a@example.com ", "name": None, "extra": [1]})
    assert (body.email, body.password, body.name) == ("a@example.com", GOOD["password"], None)
    assert typed_body(SignUp, GOOD | {"name": "n" * 200}).name == "n" * 200


@pytest.mark.parametrize(
    "raw", [{}, {"email": 5, "password": ["x"]}, {"email": "a\x00", "password": None}]
)
def test_sign_in_takes_what_is_no_text_as_empty(raw: dict[str, Any]) -> None:
    # Such a sign-in fails (and is counted) like any wrong password.
    body = typed_body(SignIn, raw)
    assert (body.email, body.password) == ("", "")
    assert typed_body(SignIn, {"email": "x", "password": "y"}).password == "y"


@pytest.mark.parametrize("name", [None, 5, "", "   ", "k" * 101, "k\x00"])
def test_an_api_key_needs_a_name_of_1_to_100_characters(name: object) -> None:
    detail = "`name` must be 1 to 100 characters."
    assert _refusal(CreateApiKey, {"name": name}) == (422, "invalid_name", detail)
    assert _refusal(CreateApiKey, {}) == (422, "invalid_name", detail)
    assert typed_body(CreateApiKey, {"name": "  laptop "}).name == "laptop"


def test_the_session_check_refuses_a_credential_that_is_no_string() -> None:
    refused = (401, "session_invalid", "The credential is not a string.")
    assert _refusal(SessionCheck, {"credential": 5}) == refused
    assert typed_body(SessionCheck, {}).credential is None
    assert typed_body(SessionCheck, {"credential": "x\x00"}).credential == "x\x00"


def test_the_published_bodies_document_every_field_and_its_limits() -> None:
    paths = document("mf_session")["paths"]

    def body(path: str) -> dict[str, Any]:
        schema: dict[str, Any] = paths[path]["post"]["requestBody"]["content"]["application/json"][
            "schema"
        ]
        return schema

    sign_up = body("/v1/auth/sign-up")
    assert sign_up["required"] == ["email", "password"]
    assert set(sign_up["properties"]) == {"email", "password", "name"}
    assert sign_up["properties"]["email"]["format"] == "email"
    assert sign_up["properties"]["password"]["minLength"] == 8
    assert body("/v1/auth/sign-in")["required"] == ["email", "password"]
    key_name = body("/v1/auth/api-keys")["properties"]["name"]
    assert (key_name["minLength"], key_name["maxLength"]) == (1, 100)
    # Each field's refusal is documented with its route's answers.
    assert (
        "invalid_email, weak_password, invalid_name"
        in (paths["/v1/auth/sign-up"]["post"]["responses"]["422"]["description"])
    )
