from __future__ import annotations

import pytest
from pydantic import ValidationError

from mediaflow_notifier.settings import NotifierSettings

SECRET = "s" * 32


def test_defaults() -> None:
    settings = NotifierSettings(service_secret=SECRET)
    assert settings.port == 8103
    assert settings.sse_heartbeat_seconds == 10  # a margin below API.md's 15
    assert settings.sse_retry_ms == 3000
    assert settings.sse_client_buffer == 256


def test_heartbeat_may_not_exceed_the_15_seconds_api_md_promises() -> None:
    with pytest.raises(ValidationError, match="sse_heartbeat_seconds"):
        NotifierSettings(service_secret=SECRET, sse_heartbeat_seconds=16)


def test_every_setting_is_documented() -> None:
    undocumented = [n for n, f in NotifierSettings.model_fields.items() if not f.description]
    assert undocumented == []
