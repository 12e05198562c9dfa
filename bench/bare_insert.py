"""The baseline of ``bench/gateway_submit.py``: a bare Litestar endpoint that reads a JSON
body and does one asyncpg INSERT, on the gateway's own server stack (``mediaflow_libs.serving
.serve``: uvicorn with uvloop and httptools, one process) and pool (``mediaflow_libs.db``,
``DATABASE_POOL_SIZE`` connections).

``POST /insert`` ``{"url": ...}`` answers 202 ``{"id": ...}``. The table ``public.bench_inserts``
is created in ``DATABASE_URL``'s database if missing.

Run: ``python bench/bare_insert.py PORT`` (with ``DATABASE_URL`` set).
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from litestar import Litestar, Request, post

from mediaflow_libs import db
from mediaflow_libs.serving import serve
from mediaflow_libs.settings import ServiceSettings

DATABASE_URL = os.environ.get("DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/mediaflow")
POOL_SIZE = int(os.environ.get("DATABASE_POOL_SIZE", "10"))


@post("/insert", status_code=202)
async def insert(request: Request[Any, Any, Any]) -> dict[str, str]:
    body = await request.json()
    async with request.app.state.pool.acquire() as con:
        row_id = await con.fetchval(
            "INSERT INTO public.bench_inserts (url) VALUES ($1) RETURNING id", body["url"]
        )
    return {"id": str(row_id)}


def create_app() -> Litestar:
    @asynccontextmanager
    async def pool(app: Litestar) -> AsyncIterator[None]:
        async with db.open_pool(DATABASE_URL, POOL_SIZE) as opened:
            async with opened.acquire() as con:
                await con.execute(
                    """CREATE TABLE IF NOT EXISTS public.bench_inserts (
                           id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
                           url text NOT NULL,
                           created_at timestamptz NOT NULL DEFAULT now())"""
                )
            app.state.pool = opened
            yield

    return Litestar(
        route_handlers=[insert], lifespan=[pool], openapi_config=None, logging_config=None
    )


if __name__ == "__main__":
    serve("bare_insert:create_app", ServiceSettings(host="127.0.0.1", port=int(sys.argv[1])))
