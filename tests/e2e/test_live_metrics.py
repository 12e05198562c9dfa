"""Every metric the Grafana dashboard and the alert rules name is exported by the running
services: read from their live /metrics after real jobs went through the stack."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import httpx
from httpx_sse import EventSource
from prometheus_client.parser import text_string_to_metric_families

from deploy.tests.monitoring import EXTERNAL_METRICS, chart_metric_names, series_names
from devstack import media, stack
from services.worker.tests import media_sources


async def _run_to_the_end(client: httpx.AsyncClient, url: str, **options: str) -> str:
    """Submit ``url`` and follow the task's SSE stream to its final status."""
    submitted = await client.post("/v1/tasks", json={"url": url, **options})
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["task"]["id"]
    async with client.stream("GET", "/v1/events", params={"task": task_id}, timeout=60) as stream:
        async for item in EventSource(stream).aiter_sse():
            if item.event == "task":
                status = str(json.loads(item.data)["status"])
                if status in ("succeeded", "failed", "canceled"):
                    return status
    raise AssertionError("the stream ended before the task did")


async def _scrape(config: stack.StackConfig) -> dict[str, set[str]]:
    """Sample name -> the services whose /metrics has at least one sample of it."""
    exported: dict[str, set[str]] = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for service in stack.SERVICES:
            response = await client.get(f"{config.service_url(service)}/metrics")
            assert response.status_code == 200, service
            for family in text_string_to_metric_families(response.text):
                for sample in family.samples:
                    exported.setdefault(sample.name, set()).add(service)
    return exported


async def test_every_metric_of_the_dashboard_and_alerts_is_on_live_metrics(
    running_stack: stack.StackConfig, origin: tuple[str, Path]
) -> None:
    base_url, directory = origin
    media.write_sample_mp4(directory / "metrics.mp4", 2 * 1024 * 1024)
    async with httpx.AsyncClient(base_url=running_stack.public_url, timeout=30) as client:
        email = f"metrics-{secrets.token_hex(4)}@example.com"
        signed_up = await client.post(
            "/v1/auth/sign-up", json={"email": email, "password": "long enough"}
        )
        assert signed_up.status_code == 201, signed_up.text
        # one job that succeeds and one that fails, so that failure series exist too
        assert await _run_to_the_end(client, f"{base_url}/metrics.mp4") == "succeeded"
        assert await _run_to_the_end(client, f"{base_url}/missing.mp4") == "failed"
        # and an HLS stream, muxed, so that the series of segments and muxing exist
        video = media_sources.make_video("160x90", directory, "metrics-src.mp4")
        media_sources.make_hls(video, directory / "metrics-hls")
        hls = f"{base_url}/metrics-hls/index.m3u8"
        assert await _run_to_the_end(client, hls, mode="mute") == "succeeded"

    exported = await _scrape(running_stack)
    named = chart_metric_names()
    missing = {
        series: sorted(named[metric])
        for metric in set(named) - set(EXTERNAL_METRICS)
        for series in series_names(metric)
        if series not in exported
    }
    assert missing == {}, "named by the chart but on no service's /metrics"
    # The external list stays honest: each is named by the chart and exported by no service.
    assert set(EXTERNAL_METRICS) <= set(named)
    assert {name: exported[name] for name in EXTERNAL_METRICS if name in exported} == {}
    # The HTTP series come from every HTTP service, not from one of them.
    assert exported["http_requests_total"] >= {"auth", "gateway", "notifier"}
