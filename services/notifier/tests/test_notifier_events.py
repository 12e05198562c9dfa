"""``GET /v1/events`` over real HTTP against the real auth service, PostgreSQL and RabbitMQ,
with task events produced the way the worker produces them (transaction + outbox relay)."""

from __future__ import annotations

import time
from typing import Any

import httpx

from mediaflow_notifier.app import create_app
from services.notifier.tests.support import (
    EventReader,
    Notifier,
    Relay,
    Tasks,
    User,
    free_port,
    notifier_settings,
    open_stream,
    serve_in_process,
    sign_up,
    wait_for,
)


async def test_first_connect_sends_a_snapshot_of_each_unfinished_task(
    notifier: Notifier, relay: Relay, task_store: Tasks, alice: User
) -> None:
    queued = await task_store.create(alice)
    running = await task_store.create(alice)
    running_event = await task_store.move(running, "running", progress=40, bytes_done=400)
    finished = await task_store.create(alice)
    await task_store.move(finished, "running")
    await task_store.move(finished, "succeeded", progress=100)
    # Otherwise those changes could still be published after the stream opens, and
    # arrive as (legitimate) live events.
    await task_store.published(alice)

    async with open_stream(notifier.url, alice) as stream:
        assert stream.response.headers["content-type"].startswith("text/event-stream")
        assert stream.response.headers["cache-control"] == "no-cache"
        assert stream.response.headers["x-accel-buffering"] == "no"
        snapshots = await stream.events(2)
        # Nothing else before the first heartbeat: the finished task has no snapshot.
        assert (await stream.block()).comments == ["ping"]

    # In cursor order, so the id a client keeps afterwards covers every snapshot.
    assert [s.task["id"] for s in snapshots] == [queued, running]
    assert snapshots[0].id == await task_store.latest_event_id(queued)
    assert snapshots[0].task["status"] == "queued"
    assert snapshots[1].id == running_event
    assert snapshots[1].task["status"] == "running"
    assert snapshots[1].task["progress"] == 40
    assert set(snapshots[1].task) == {
        "id", "status", "progress", "bytes_done", "bytes_total", "source_url", "attempt",
        "options",
        "error", "result", "created_at", "updated_at",
    }  # fmt: skip


async def test_live_events_arrive_in_order(
    notifier: Notifier, relay: Relay, task_store: Tasks, alice: User
) -> None:
    task_id = await task_store.create(alice)
    lag_before = await _metric(notifier, "notifier_delivery_lag_seconds_count")
    live_before = await _metric(notifier, 'notifier_events_delivered_total{kind="live"}')
    async with open_stream(notifier.url, alice) as stream:
        snapshot = await stream.event()
        # One change at a time: progress updates still waiting to be written may be
        # coalesced (API.md), which is not what this test is about.
        produced, received = [], []
        for progress in (10, 50, 90):
            produced.append(await task_store.move(task_id, "running", progress=progress))
            received.append(await stream.event())
        produced.append(
            await task_store.move(task_id, "failed", error_code="source_timeout", error_message="x")
        )
        received.append(await stream.event())

    assert snapshot.task["status"] == "queued"
    assert [e.id for e in received] == produced
    assert [e.task["status"] for e in received] == ["running", "running", "running", "failed"]
    assert [e.task["progress"] for e in received[:3]] == [10, 50, 90]
    assert received[-1].task["error"] == {"code": "source_timeout", "message": "x"}
    live = await _metric(notifier, 'notifier_events_delivered_total{kind="live"}')
    assert live - live_before == len(produced)
    lag = await _metric(notifier, "notifier_delivery_lag_seconds_count")
    assert lag - lag_before == len(produced)


async def test_task_filter_narrows_to_the_named_tasks_whatever_their_status(
    notifier: Notifier, relay: Relay, task_store: Tasks, alice: User
) -> None:
    watched = await task_store.create(alice)
    other = await task_store.create(alice)
    done = await task_store.create(alice)
    await task_store.move(done, "canceled")

    params = [("task", watched), ("task", done)]
    async with open_stream(notifier.url, alice, params=params) as stream:
        snapshots = await stream.events(2)
        await task_store.move(other, "running")
        watched_event = await task_store.move(watched, "running", progress=5)
        live = await stream.event()

    assert sorted(s.task["id"] for s in snapshots) == sorted([watched, done])
    assert {s.task["id"]: s.task["status"] for s in snapshots}[done] == "canceled"
    # `other` changed first; had it leaked through, it would be the next event.
    assert live.id == watched_event
    assert live.task["id"] == watched


async def test_another_users_task_never_appears(
    notifier: Notifier, relay: Relay, task_store: Tasks, alice: User, bob: User
) -> None:
    alices = await task_store.create(alice)
    bobs = await task_store.create(bob)

    async with (
        # Alice watching too means her events do reach this replica's queue.
        open_stream(notifier.url, alice) as alices_stream,
        open_stream(notifier.url, bob) as everything,
        open_stream(notifier.url, bob, params=[("task", alices), ("task", bobs)]) as filtered,
        open_stream(notifier.url, bob, params=[("task", alices)]) as foreign_only,
    ):
        assert (await everything.event()).task["id"] == bobs
        assert (await filtered.event()).task["id"] == bobs
        await task_store.move(alices, "running")
        await task_store.move(alices, "succeeded", progress=100)
        bobs_event = await task_store.move(bobs, "running")
        assert len(await alices_stream.events(3)) == 3  # her snapshot and both changes

        # Bob's own change comes next on both streams: Alice's changes, made first, never did.
        assert (await everything.event()).id == bobs_event
        assert (await filtered.event()).id == bobs_event
        # A stream naming only Alice's task gets nothing at all (pings only).
        assert await _nothing_but_pings(foreign_only, seconds=2.5)


async def test_resume_replays_every_missed_change_once_in_order(
    notifier: Notifier, relay: Relay, task_store: Tasks, alice: User
) -> None:
    task_id = await task_store.create(alice)
    async with open_stream(notifier.url, alice) as stream:
        await stream.event()  # the snapshot
        await task_store.move(task_id, "running", progress=10)
        cursor = (await stream.event()).id

    # While the client is away, and with publishing held back so the same events are
    # still on their way through RabbitMQ when it resumes.
    await relay.stop()
    missed = [
        await task_store.move(task_id, "running", progress=50),
        await task_store.move(task_id, "running", progress=90),
        await task_store.move(task_id, "succeeded", progress=100),
    ]
    second = await task_store.create(alice)
    missed.append(await task_store.latest_event_id(second))

    async with open_stream(notifier.url, alice, headers={"Last-Event-ID": str(cursor)}) as stream:
        replayed = await stream.events(len(missed))
        relay.start()  # the held-back events now arrive live and must not repeat
        after = await task_store.move(second, "running")
        following = await stream.event()

    assert [e.id for e in replayed] == missed
    assert [e.task["status"] for e in replayed] == ["running", "running", "succeeded", "queued"]
    assert [e.task["progress"] for e in replayed[:3]] == [50, 90, 100]
    assert following.id == after


async def test_resume_cursor_in_the_query_string(
    notifier: Notifier, relay: Relay, task_store: Tasks, alice: User
) -> None:
    task_id = await task_store.create(alice)
    cursor = await task_store.latest_event_id(task_id)
    missed = await task_store.move(task_id, "running", progress=1)

    async with open_stream(notifier.url, alice, params=[("last_event_id", str(cursor))]) as stream:
        assert (await stream.event()).id == missed


async def test_unknown_or_garbage_cursor_gets_snapshots(
    notifier: Notifier, relay: Relay, task_store: Tasks, alice: User, bob: User
) -> None:
    task_id = await task_store.create(alice)
    first = await task_store.latest_event_id(task_id)
    latest = await task_store.move(task_id, "running", progress=3)
    bobs_cursor = await task_store.latest_event_id(await task_store.create(bob))

    for cursor in ("garbage", "-1", "99999999999", "1e3", str(bobs_cursor)):
        async with open_stream(notifier.url, alice, headers={"Last-Event-ID": cursor}) as stream:
            event = await stream.event()
            assert (event.id, event.task["progress"]) == (latest, 3), cursor
    # A real cursor replays instead, which is what makes the cases above meaningful.
    async with open_stream(notifier.url, alice, headers={"Last-Event-ID": str(first)}) as stream:
        assert (await stream.event()).id == latest


async def test_heartbeat_comment_while_idle(notifier: Notifier, alice: User) -> None:
    async with open_stream(notifier.url, alice) as stream:
        started = time.monotonic()
        block = await stream.block(within=3)
        assert block.comments == ["ping"]
        assert not block.fields
        block = await stream.block(within=3)
        assert block.comments == ["ping"]
    assert time.monotonic() - started < 3


async def test_missing_session_is_401_problem(notifier: Notifier) -> None:
    async with httpx.AsyncClient(base_url=notifier.url) as client:
        response = await client.get("/v1/events")
    _assert_problem(response, 401, "session_missing")


async def test_unknown_session_is_401_problem(notifier: Notifier) -> None:
    async with httpx.AsyncClient(base_url=notifier.url) as client:
        response = await client.get("/v1/events", headers={"Cookie": "mf_session=forged"})
    _assert_problem(response, 401, "session_invalid")


async def test_invalid_task_id_is_422_problem(notifier: Notifier, alice: User) -> None:
    async with httpx.AsyncClient(base_url=notifier.url) as client:
        response = await client.get(
            "/v1/events",
            params={"task": "not-a-uuid"},
            headers={"Cookie": f"mf_session={alice.token}"},
        )
    _assert_problem(response, 422, "invalid_task_id")


async def test_only_get_is_allowed(notifier: Notifier, alice: User) -> None:
    async with httpx.AsyncClient(base_url=notifier.url) as client:
        response = await client.post("/v1/events", headers={"Cookie": f"mf_session={alice.token}"})
    _assert_problem(response, 405, "method_not_allowed")
    assert response.headers["allow"] == "GET"


async def test_auth_down_is_503_with_retry_after(infra: Any, alice: User) -> None:
    settings = notifier_settings(infra, f"http://127.0.0.1:{free_port()}")
    async with (
        serve_in_process(create_app(settings)) as url,
        httpx.AsyncClient(base_url=url) as client,
    ):
        response = await client.get("/v1/events", headers={"Cookie": f"mf_session={alice.token}"})
    _assert_problem(response, 503, "auth_unavailable")
    assert int(response.headers["retry-after"]) > 0


async def test_streams_are_counted_and_released_on_disconnect(
    notifier: Notifier, alice: User
) -> None:
    fanout = notifier.resources.fanout
    before = fanout.subscriber_count()
    disconnects = await _metric(notifier, 'notifier_disconnects_total{reason="client"}')
    async with open_stream(notifier.url, alice), open_stream(notifier.url, alice):
        await wait_for(lambda: fanout.subscriber_count() == before + 2, "two subscribers")
        assert await _metric(notifier, "notifier_connected_clients") >= 2
    await wait_for(lambda: fanout.subscriber_count() == before, "the subscribers to go")
    assert await _metric(notifier, 'notifier_disconnects_total{reason="client"}') >= disconnects + 2


async def test_a_user_past_the_stream_limit_is_refused_until_one_closes(
    infra: Any, auth_url: str, alice: User
) -> None:
    settings = notifier_settings(infra, auth_url, sse_max_streams_per_user=2)
    cookie = {"Cookie": f"mf_session={alice.token}"}
    app = create_app(settings)
    async with serve_in_process(app) as url:
        bob = await sign_up(auth_url)
        async with open_stream(url, alice), open_stream(url, alice):
            async with httpx.AsyncClient(base_url=url) as client:
                refused = await client.get("/v1/events", headers=cookie)
            _assert_problem(refused, 429, "too_many_streams")
            assert int(refused.headers["retry-after"]) > 0
            async with open_stream(url, bob):  # another user is not held to alice's count
                pass
        # Both closed: there is room again.
        open_streams = Notifier(url, app).resources.streams_per_user
        await wait_for(lambda: alice.id not in open_streams, "alice's streams to be released")
        async with open_stream(url, alice), open_stream(url, alice):
            pass


async def test_readyz_checks_database_and_broker(notifier: Notifier) -> None:
    async with httpx.AsyncClient(base_url=notifier.url) as client:
        response = await client.get("/readyz")
    assert response.status_code == 200
    assert response.json() == {"status": "ready"}


def _assert_problem(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    body = response.json()
    assert body["code"] == code
    assert body["status"] == status
    assert body["request_id"] == response.headers["x-request-id"]


async def _metric(notifier: Notifier, sample: str) -> float:
    """One sample of ``/metrics``, e.g. ``name{label="value"}``; 0 when not yet exported."""
    async with httpx.AsyncClient(base_url=notifier.url) as client:
        text = (await client.get("/metrics")).text
    for line in text.splitlines():
        name, _, value = line.rpartition(" ")
        if name == sample:
            return float(value)
    return 0.0


async def _nothing_but_pings(stream: EventReader, seconds: float) -> bool:
    """True when only comments (at least one ping) arrive for ``seconds``."""
    pings = 0
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            block = await stream.block(within=left)
        except TimeoutError:
            break
        assert "data" not in block.fields, f"unexpected event {block}"
        pings += 1
    return pings > 0


async def test_a_signed_out_session_ends_its_open_stream_promptly(
    notifier: Notifier, auth_url: str, alice: User
) -> None:
    async with open_stream(notifier.url, alice) as stream:
        assert (await stream.block()).comments == ["ping"]  # the stream is live
        async with httpx.AsyncClient(base_url=auth_url) as client:
            signed_out = await client.post(
                "/v1/auth/sign-out", headers={"cookie": f"mf_session={alice.token}"}
            )
        assert signed_out.status_code == 204
        # Revocations reach every replica over RabbitMQ; the stream ends, not just new ones.
        assert await stream.ended(within=1.5)
