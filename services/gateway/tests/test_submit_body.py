"""The body of POST /v1/tasks: the first bad field in the body's own order gets its code
(the URL's rules before the options'), and the published schema documents every field."""

from __future__ import annotations

from typing import Any

import pytest

from mediaflow_gateway.validation import (
    SubmitTask,
    validated_options,
    validated_source_url,
)
from mediaflow_libs import tasks
from mediaflow_libs.problems import ProblemError
from mediaflow_libs.request_bodies import body_schema, typed_body

URL = "https://media.example/v.mp4"
NOT_TEXT = (422, "invalid_url", "`url` must be a non-empty string of characters.")
QUALITY = '`quality` must be one of "best", 2160, 1440, 1080, 720, 480, 360, 240, 144.'


def _submitted(raw: dict[str, Any]) -> SubmitTask:
    return typed_body(SubmitTask, raw, {"url": validated_source_url})


def _refusal(raw: dict[str, Any]) -> tuple[int, str, str]:
    with pytest.raises(ProblemError) as refused:
        validated_options(_submitted(raw))
    return refused.value.status_code, refused.value.code, refused.value.detail


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({}, NOT_TEXT),
        ({"url": None}, NOT_TEXT),
        ({"url": ["x"]}, NOT_TEXT),
        ({"url": "https://media.example/\x00"}, NOT_TEXT),
        ({"url": "   "}, NOT_TEXT),
        # The URL's rules come first, whatever order the body has.
        (
            {"quality": "720", "url": "ftp://media.example/v"},
            (422, "invalid_url", "Only http and https URLs can be fetched."),
        ),
        ({"url": URL, "quality": "720"}, (422, "invalid_options", QUALITY)),
        ({"url": URL, "quality": True}, (422, "invalid_options", QUALITY)),
        ({"url": URL, "quality": 720.0}, (422, "invalid_options", QUALITY)),
        ({"url": URL, "quality": None}, (422, "invalid_options", QUALITY)),
        (
            {"url": URL, "mode": "loud", "quality": 7},
            (422, "invalid_options", QUALITY),
        ),
        (
            {"url": URL, "mode": "loud"},
            (422, "invalid_options", '`mode` must be one of "auto", "audio", "mute".'),
        ),
        (
            {"url": URL, "audio_format": "mp3"},
            (
                422,
                "invalid_options",
                '`audio_format` other than "original" needs `mode: "audio"`.',
            ),
        ),
    ],
)
def test_each_bad_field_gets_the_contracts_answer(
    raw: dict[str, Any], expected: tuple[int, str, str]
) -> None:
    assert _refusal(raw) == expected


def test_options_default_and_unknown_fields_are_ignored() -> None:
    body = _submitted({"url": f"  {URL}  ", "surprise": {"x": 1}})
    assert body.url == URL
    assert validated_options(body) == tasks.DEFAULT_OPTIONS
    chosen = _submitted({"url": URL, "quality": 720, "mode": "audio", "audio_format": "mp3"})
    assert validated_options(chosen) == {"quality": "720", "mode": "audio", "audio_format": "mp3"}


def test_the_schema_documents_every_field_with_its_choices() -> None:
    schema = body_schema(SubmitTask)
    assert schema["required"] == ["url"]
    assert set(schema["properties"]) == {"url", *tasks.OPTION_VALUES}
    assert schema["properties"]["url"]["maxLength"] == 2048
    for option, values in tasks.OPTION_VALUES.items():
        documented = schema["properties"][option]
        assert sorted(map(str, documented["enum"])) == sorted(values), option
        assert documented["default"] == (
            int(tasks.DEFAULT_OPTIONS[option])
            if tasks.DEFAULT_OPTIONS[option].isdigit()
            else tasks.DEFAULT_OPTIONS[option]
        )
