"""Log output: exceptions are rendered without the frames' local variables, which hold
passwords, tokens and keys as often as anything else."""

from __future__ import annotations

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
