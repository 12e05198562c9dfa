"""Log output: exceptions are rendered without the frames' local variables, which hold
passwords, tokens and keys as often as anything else."""

from __future__ import annotations

import json
import logging

import pytest
import structlog

from mediaflow_libs.logging import configure_logging


def _fail_holding(secret: str) -> None:
    token = secret  # a local variable of the failing frame
    raise RuntimeError(f"failed after {len(token)} characters")


@pytest.mark.parametrize("fmt", ["json", "console"])
def test_an_exception_is_logged_without_its_locals(
    fmt: str, capsys: pytest.CaptureFixture[str]
) -> None:
    secret = "session-token-that-must-not-be-logged"
    configure_logging("test", "info", fmt, cache_loggers=False)
    try:
        try:
            _fail_holding(secret)
        except RuntimeError:
            structlog.get_logger("test").exception("request.unhandled_error")
    finally:
        structlog.reset_defaults()
    out = capsys.readouterr().out
    assert "request.unhandled_error" in out
    assert "_fail_holding" in out  # a traceback was logged
    assert secret not in out


def test_standard_library_records_are_json_lines_too(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("test", "info", "json", cache_loggers=False)
    try:
        structlog.contextvars.bind_contextvars(request_id="r-1")
        logging.getLogger("some.library").info("chatter below WARNING is dropped")
        logging.getLogger("some.library").warning("connection lost, retrying")
    finally:
        structlog.contextvars.clear_contextvars()
        structlog.reset_defaults()
        logging.basicConfig(force=True)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert lines == [
        {
            "event": "connection lost, retrying",
            "logger": "some.library",
            "level": "warning",
            "service": "test",
            "request_id": "r-1",
            "timestamp": lines[0]["timestamp"],
        }
    ]
