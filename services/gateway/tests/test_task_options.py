"""The submission options (quality, mode, audio_format): checked before anything is
charged, stored with the task, echoed, carried in the job, part of the idempotency body;
and the download named after the result's file name (RFC 6266)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aio_pika
import asyncpg
import httpx
import pytest

from mediaflow_gateway.settings import GatewaySettings
from mediaflow_libs.amqp import Topology
from mediaflow_libs.contracts import Job
from mediaflow_libs.s3 import open_s3

URL = "https://media.example/clip.m3u8"


def problem_code(response: httpx.Response) -> str:
    assert response.headers["content-type"].startswith("application/problem+json"), response.text
    return str(response.json()["code"])


@pytest.mark.parametrize(
    "options",
    [
        {"quality": 1000},
        {"quality": "720"},
        {"quality": True},
        {"quality": None},
        {"quality": "worst"},
        {"mode": "loud"},
        {"mode": ["audio"]},
        {"audio_format": "flac"},
        {"audio_format": "mp3"},  # re-encoding is for audio mode only
        {"mode": "mute", "audio_format": "opus"},
    ],
)
async def test_unknown_option_values_are_422_and_charge_nothing(
    options: dict[str, Any], gateway: httpx.AsyncClient, sign_up: Any
) -> None:
    user = await sign_up()
    response = await gateway.post("/v1/tasks", json={"url": URL, **options}, headers=user.cookie)
    assert (response.status_code, problem_code(response)) == (422, "invalid_options")
    assert (await gateway.get("/v1/tasks", headers=user.cookie)).json()["items"] == []
    me = await gateway.get("/v1/me", headers=user.cookie)
    assert me.json()["credits"]["balance"] == 10


async def job_of(infra: Any, task_id: str) -> Job:
    connection = await aio_pika.connect_robust(infra.amqp_url)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(Topology(infra.amqp_namespace).jobs_queue)
        for _ in range(200):
            message = await queue.get(fail=False)
            if message is None:
                await asyncio.sleep(0.05)
                continue
            await message.ack()
            job = Job.FromString(message.body)
            if job.task_id == task_id:
                return job
    raise AssertionError("the job was never published")


async def test_options_are_stored_echoed_and_carried_in_the_job(
    gateway: httpx.AsyncClient, sign_up: Any, infra: Any
) -> None:
    user = await sign_up()
    default = await gateway.post("/v1/tasks", json={"url": URL}, headers=user.cookie)
    assert default.json()["task"]["options"] == {
        "quality": "best",
        "mode": "auto",
        "audio_format": "original",
    }
    body = {"url": URL, "quality": 240, "mode": "audio", "audio_format": "opus"}
    response = await gateway.post("/v1/tasks", json=body, headers=user.cookie)
    assert response.status_code == 202, response.text
    task = response.json()["task"]
    expected = {"quality": 240, "mode": "audio", "audio_format": "opus"}
    assert task["options"] == expected
    read = await gateway.get(f"/v1/tasks/{task['id']}", headers=user.cookie)
    assert read.json()["task"]["options"] == expected
    job = await job_of(infra, task["id"])
    assert (job.quality, job.mode, job.audio_format) == ("240", "audio", "opus")


async def test_options_are_part_of_the_idempotency_body(
    gateway: httpx.AsyncClient, sign_up: Any
) -> None:
    user = await sign_up()
    headers = {**user.cookie, "idempotency-key": "opts-1"}
    first = await gateway.post("/v1/tasks", json={"url": URL, "mode": "mute"}, headers=headers)
    again = await gateway.post("/v1/tasks", json={"url": URL, "mode": "mute"}, headers=headers)
    assert first.json()["task"]["id"] == again.json()["task"]["id"]
    other = await gateway.post("/v1/tasks", json={"url": URL, "mode": "audio"}, headers=headers)
    assert (other.status_code, problem_code(other)) == (409, "idempotency_conflict")
    me = await gateway.get("/v1/me", headers=user.cookie)
    assert me.json()["credits"]["balance"] == 9


async def test_the_download_is_saved_under_the_result_file_name(
    gateway: httpx.AsyncClient, sign_up: Any, infra: Any, db_pool: asyncpg.Pool
) -> None:
    user = await sign_up()
    response = await gateway.post("/v1/tasks", json={"url": URL}, headers=user.cookie)
    task_id = response.json()["task"]["id"]
    key = f"tasks/{user.id}/{task_id}/1"
    async with open_s3(GatewaySettings(**infra.settings_kwargs())) as s3:
        await s3.put_object(Bucket=infra.bucket, Key=key, Body=b"stored", ContentType="video/mp4")
        # What a worker records on success (the transition the worker makes, abridged).
        await db_pool.execute(
            """UPDATE media.tasks SET status = 'succeeded', progress = 100, object_key = $2,
                   result_size = 6, result_sha256 = 'x', result_content_type = 'video/mp4',
                   result_filename = $3, result_media = '{"title": "Été \\"live\\""}'
               WHERE id = $1""",
            task_id,
            key,
            'Été "live".mp4',
        )
        read = await gateway.get(f"/v1/tasks/{task_id}", headers=user.cookie)
        assert read.json()["task"]["result"]["filename"] == 'Été "live".mp4'
        assert read.json()["task"]["result"]["media"]["title"] == 'Été "live"'
        redirect = await gateway.get(f"/v1/tasks/{task_id}/download", headers=user.cookie)
        assert redirect.status_code == 302
        location = redirect.headers["location"]
        disposition = (
            'attachment; filename="_t_ _live_.mp4"; '
            "filename*=UTF-8''%C3%89t%C3%A9%20%22live%22.mp4"
        )
        query = parse_qs(urlsplit(location).query)
        assert query["response-content-disposition"] == [disposition]
        async with httpx.AsyncClient() as storage:
            stored = await storage.get(location)
        assert stored.status_code == 200
        assert stored.headers["content-disposition"] == disposition
        await s3.delete_object(Bucket=infra.bucket, Key=key)
