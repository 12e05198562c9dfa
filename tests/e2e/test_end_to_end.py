"""One real job through nginx, auth, gateway, RabbitMQ, worker, SeaweedFS and the notifier's
SSE stream, driven with httpx as a user would."""

from __future__ import annotations

import hashlib
import json
import secrets
from pathlib import Path

import httpx

from devstack import media, stack
from mediaflow_cli.sse import SseEvent, read_events
from services.worker.tests import media_sources

SAMPLE_BYTES = 12 * 1024 * 1024 + 12345  # not a multiple of the part size


async def _follow_to_terminal(client: httpx.AsyncClient, task_id: str) -> list[dict]:  # type: ignore[type-arg]
    seen = []
    async with client.stream("GET", "/v1/events", params={"task": task_id}, timeout=60) as response:
        assert response.status_code == 200, await response.aread()
        assert response.headers["content-type"].startswith("text/event-stream")
        # API.md promises this header to the client, through the ingress too.
        assert response.headers["x-accel-buffering"] == "no"
        async for item in read_events(response):
            if isinstance(item, SseEvent) and item.event == "task":
                assert item.id, "every task event carries a cursor"
                task = json.loads(item.data)
                seen.append(task)
                if task["status"] in ("succeeded", "failed", "canceled"):
                    break
    return seen


async def test_sign_up_submit_follow_sse_download_and_verify(
    running_stack: stack.StackConfig, origin: tuple[str, Path]
) -> None:
    base_url, directory = origin
    source_sha256 = media.write_sample_mp4(directory / "e2e.mp4", SAMPLE_BYTES)
    async with httpx.AsyncClient(base_url=running_stack.public_url, timeout=30) as client:
        signed_up = await client.post(
            "/v1/auth/sign-up",
            json={
                "email": f"e2e-{secrets.token_hex(4)}@example.com",
                "password": "a long passphrase",
            },
        )
        assert signed_up.status_code == 201, signed_up.text
        assert "mf_session" in client.cookies

        submitted = await client.post("/v1/tasks", json={"url": f"{base_url}/e2e.mp4"})
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task"]["id"]

        seen = await _follow_to_terminal(client, task_id)
        final = seen[-1]
        assert final["status"] == "succeeded", final
        assert final["progress"] == 100
        assert final["bytes_done"] == SAMPLE_BYTES
        assert final["result"] == {
            "size": SAMPLE_BYTES,
            "sha256": source_sha256,
            "content_type": "video/mp4",
            "filename": "e2e.mp4",
            "media": final["result"]["media"],
            "expires_at": final["result"]["expires_at"],
        }
        assert final["options"] == {"quality": "best", "mode": "auto", "audio_format": "original"}
        assert "running" in [task["status"] for task in seen]

        redirect = await client.get(f"/v1/tasks/{task_id}/download")
        assert redirect.status_code == 302
        stored = hashlib.sha256()
        async with (
            httpx.AsyncClient() as storage,
            storage.stream("GET", redirect.headers["location"]) as body,
        ):
            assert body.status_code == 200
            async for block in body.aiter_bytes():
                stored.update(block)
        assert stored.hexdigest() == source_sha256

        me = await client.get("/v1/me")
        assert me.json()["credits"]["balance"] == 9


async def test_failed_source_is_reported_live_and_refunded(
    running_stack: stack.StackConfig, origin: tuple[str, Path]
) -> None:
    base_url, _ = origin
    async with httpx.AsyncClient(base_url=running_stack.public_url, timeout=30) as client:
        await client.post(
            "/v1/auth/sign-up",
            json={
                "email": f"e2e-{secrets.token_hex(4)}@example.com",
                "password": "a long passphrase",
            },
        )
        submitted = await client.post("/v1/tasks", json={"url": f"{base_url}/missing.mp4"})
        task_id = submitted.json()["task"]["id"]
        final = (await _follow_to_terminal(client, task_id))[-1]
        assert final["status"] == "failed"
        assert final["error"]["code"] == "source_http_error"
        me = await client.get("/v1/me")
        assert me.json()["credits"]["balance"] == 10


async def test_internal_routes_are_not_reachable_through_the_ingress(
    running_stack: stack.StackConfig,
) -> None:
    async with httpx.AsyncClient(base_url=running_stack.public_url) as client:
        response = await client.post("/internal/v1/sessions/verify", json={"credential": "x"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["code"] == "not_found"


def test_every_line_the_services_log_is_json(running_stack: stack.StackConfig) -> None:
    """Log pipelines parse one JSON object per line: a library's plain-text line (Litestar's
    own logging, a warning from the standard library) would break them. Run after the jobs
    above, so the logs hold requests, jobs and events."""
    for service in stack.SERVICES:
        lines = (running_stack.run_dir / "logs" / f"{service}.log").read_text().splitlines()
        assert lines, f"{service} logged nothing"
        for line in lines:
            entry = json.loads(line)  # fails, naming the line, on anything but JSON
            assert entry["service"] == service, line


async def test_an_hls_playlist_with_options_through_the_stack(
    running_stack: stack.StackConfig, origin: tuple[str, Path]
) -> None:
    """A user's HLS link with `mode: "audio"` and `audio_format: "mp3"`: the options are
    echoed, the stored file is MP3 named after the URL, and the download says so."""
    base_url, directory = origin
    source = directory / "hls-e2e"
    source.mkdir()
    video = media_sources.make_video("320x180", source, "src.mp4")
    media_sources.make_hls(video, source / "stream")
    async with httpx.AsyncClient(base_url=running_stack.public_url, timeout=30) as client:
        await client.post(
            "/v1/auth/sign-up",
            json={
                "email": f"e2e-{secrets.token_hex(4)}@example.com",
                "password": "a long passphrase",
            },
        )
        refused = await client.post(
            "/v1/tasks", json={"url": f"{base_url}/hls-e2e/stream/index.m3u8", "mode": "loud"}
        )
        assert refused.status_code == 422
        assert refused.json()["code"] == "invalid_options"
        assert (await client.get("/v1/me")).json()["credits"]["balance"] == 10
        submitted = await client.post(
            "/v1/tasks",
            json={
                "url": f"{base_url}/hls-e2e/stream/index.m3u8",
                "mode": "audio",
                "audio_format": "mp3",
            },
        )
        assert submitted.status_code == 202, submitted.text
        task = submitted.json()["task"]
        assert task["options"] == {"quality": "best", "mode": "audio", "audio_format": "mp3"}
        final = (await _follow_to_terminal(client, task["id"]))[-1]
        assert final["status"] == "succeeded", final
        result = final["result"]
        assert (result["content_type"], result["filename"]) == ("audio/mpeg", "index.mp3")
        assert result["media"]["audio_codec"] == "mp3"
        assert result["media"]["video_codec"] is None
        redirect = await client.get(f"/v1/tasks/{task['id']}/download")
        assert redirect.status_code == 302
        async with httpx.AsyncClient() as storage:
            stored = await storage.get(redirect.headers["location"])
        assert stored.status_code == 200
        assert stored.headers["content-disposition"] == (
            "attachment; filename=\"index.mp3\"; filename*=UTF-8''index.mp3"
        )
        assert hashlib.sha256(stored.content).hexdigest() == result["sha256"]
