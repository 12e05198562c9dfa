from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from litestar.testing import AsyncTestClient

from mediaflow_auth.app import create_app
from mediaflow_auth.settings import AuthSettings


@pytest.fixture
async def auth_client(infra) -> AsyncIterator[AsyncTestClient]:  # type: ignore[no-untyped-def]
    app = create_app(AuthSettings(**infra.settings_kwargs()))
    async with AsyncTestClient(app=app, base_url="http://127.0.0.1:8080") as client:
        # Tests pass cookies explicitly; a jar would hide which session a request used.
        async def forget_cookies(_: object) -> None:
            client.cookies.clear()

        client.event_hooks["request"] = [forget_cookies]
        yield client
