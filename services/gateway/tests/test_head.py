"""HEAD is answered as the GET would be, headers only, and the server sees a whole response."""

from __future__ import annotations

import logging

import httpx
import pytest


@pytest.mark.parametrize("path", ["/v1/me", "/v1/nope", "/healthz"])
async def test_head_ends_its_response_cleanly(
    gateway: httpx.AsyncClient, caplog: pytest.LogCaptureFixture, path: str
) -> None:
    get = await gateway.get(path)
    with caplog.at_level(logging.ERROR, logger="uvicorn.error"):
        head = await gateway.head(path)
        again = await gateway.head(path)
    assert head.status_code == again.status_code == get.status_code
    assert head.content == b""
    assert head.headers["content-type"] == get.headers["content-type"]
    errors = [r.getMessage() for r in caplog.records if r.name == "uvicorn.error"]
    assert not errors, errors
