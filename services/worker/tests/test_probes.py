"""The worker's own port answers like every service's (the shared routes of
``mediaflow_libs.operator_routes``, served in the worker's event loop): JSON probes,
Prometheus text, and problem documents for everything else."""

from __future__ import annotations

import httpx

from devstack import stack
from mediaflow_libs.app_builder import operator_app
from mediaflow_libs.serving import serve_in_loop
from mediaflow_worker.media.mux import media_tools
from mediaflow_worker.settings import WorkerSettings


def settings() -> WorkerSettings:
    return WorkerSettings(service_secret="x" * 32)


async def test_probes_answer_and_everything_else_is_a_problem_document() -> None:
    healthy = True

    async def database() -> None:
        if not healthy:
            raise ConnectionError("connection refused")

    port = stack.free_port()
    async with (
        serve_in_loop(
            operator_app([database], settings(), {"media_tools": media_tools()}),
            "127.0.0.1",
            port,
        ),
        httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client,
    ):
        assert (await client.get("/healthz")).json() == {"status": "ok"}
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        metrics = await client.get("/metrics")
        assert metrics.headers["content-type"].startswith("text/plain")
        assert "worker_jobs_in_flight" in metrics.text
        facts = (await client.get("/diagnostics")).json()
        assert set(facts) == {
            "public_url",
            "service_secret_fingerprint",
            "amqp_namespace",
            "media_tools",
            "time",
        }
        assert set(facts["media_tools"]) == {"ffmpeg", "ffprobe", "yt_dlp"}

        healthy = False
        not_ready = await client.get("/readyz")
        assert not_ready.status_code == 503
        assert not_ready.headers["content-type"].startswith("application/problem+json")
        assert not_ready.json()["code"] == "not_ready"
        assert "database: connection refused" in not_ready.json()["detail"]

        for response, status, code in (
            (await client.get("/nope"), 404, "not_found"),
            (await client.post("/healthz"), 405, "method_not_allowed"),
        ):
            assert response.status_code == status
            body = response.json()
            assert (body["status"], body["code"]) == (status, code)
            assert set(body) == {"type", "title", "status", "detail", "code", "request_id"}
