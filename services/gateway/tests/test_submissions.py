"""Task submissions written in batches: one transaction for those that arrive together, each
with its own outcome."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from libs.tests.support import private_database
from mediaflow_gateway import submissions
from mediaflow_libs import credits, db
from mediaflow_libs.amqp import Topology
from mediaflow_libs.migrate import apply_migrations


@pytest.fixture(scope="module")
async def db_pool(infra) -> AsyncIterator[asyncpg.Pool]:  # type: ignore[no-untyped-def]
    """A database of these tests' own: the gateway other tests serve runs an outbox relay on
    the shared one, which would publish (and delete) the jobs counted here."""
    async with private_database(infra, "submissions") as url:
        await apply_migrations(url)
        async with db.open_pool(url, size=5) as pool:
            yield pool


@pytest.fixture
def topology(infra) -> Topology:  # type: ignore[no-untyped-def]
    return Topology(infra.amqp_namespace)


def _submitter(db_pool: asyncpg.Pool, topology: Topology) -> submissions.Submitter:
    return submissions.Submitter(
        db_pool, topology, cost=1, signup_credits=0, submits_per_window=100, window_seconds=60
    )


async def _user_with(db_pool: asyncpg.Pool, balance: int) -> str:
    user_id = str(uuid.uuid4())
    async with db_pool.acquire() as con:
        await credits.ensure_account(con, user_id, balance)
    return user_id


def _batches_written() -> float:
    (metric,) = submissions.SUBMISSION_BATCH_SIZE.collect()
    return next(s.value for s in metric.samples if s.name.endswith("_count"))


async def test_submissions_sent_together_share_transactions_but_not_outcomes(
    db_pool: asyncpg.Pool, topology: Topology
) -> None:
    submitter = _submitter(db_pool, topology)
    poor, rich = await _user_with(db_pool, 2), await _user_with(db_pool, 10)
    batches_before = _batches_written()
    answers = await asyncio.gather(
        *(
            submitter.submit(user_id=user, source_url=f"https://media.example/{n}.mp4")
            for n in range(6)
            for user in (poor, rich)
        )
    )
    outcomes = {user: [] for user in (poor, rich)}  # type: dict[str, list[str]]
    for n, answer in enumerate(answers):
        outcomes[(poor, rich)[n % 2]].append(answer.outcome)
    assert sorted(outcomes[poor]) == ["accepted"] * 2 + ["insufficient_credits"] * 4
    assert outcomes[rich] == ["accepted"] * 6
    # Twelve submissions, fewer transactions: the ones that waited went together.
    assert _batches_written() - batches_before < 12
    async with db_pool.acquire() as con:
        assert await credits.balance(con, poor) == 0
        assert await credits.balance(con, rich) == 4
        written = await con.fetchval(
            "SELECT count(*) FROM media.tasks WHERE user_id = ANY($1::uuid[])", [poor, rich]
        )
        jobs = await con.fetchval(
            "SELECT count(*) FROM media.outbox WHERE mandatory AND routing_key = $1",
            topology.job_routing_key(),
        )
    assert written == 8
    assert jobs >= 8
    accepted = [a.task for a in answers if a.outcome == "accepted"]
    assert all(task is not None and task["status"] == "queued" for task in accepted)
    await submitter.aclose()


async def test_a_refused_submission_writes_nothing_and_uses_no_rate_limit_slot(
    db_pool: asyncpg.Pool, topology: Topology
) -> None:
    submitter = submissions.Submitter(
        db_pool, topology, cost=1, signup_credits=0, submits_per_window=2, window_seconds=60
    )
    user = await _user_with(db_pool, 1)

    async def submit() -> str:
        answer = await submitter.submit(user_id=user, source_url="https://media.example/a.mp4")
        return answer.outcome

    async def written() -> tuple[int, ...]:
        async with db_pool.acquire() as con:
            return tuple(
                [
                    await con.fetchval(
                        f"SELECT count(*) FROM media.{table} WHERE user_id = $1", user
                    )
                    for table in ("tasks", "task_events", "credit_ledger")
                ]
                + [await credits.balance(con, user)]
            )

    assert await submit() == "accepted"
    after_one = await written()
    assert after_one == (1, 1, 2, 0)  # the task, its event; the grant and the charge
    assert [await submit() for _ in range(3)] == ["insufficient_credits"] * 3
    assert await written() == after_one
    async with db_pool.acquire() as con:
        await con.execute("UPDATE media.credit_accounts SET balance = 5 WHERE user_id = $1", user)
    # Two a window: the refused ones did not count, so the second is accepted.
    assert [await submit(), await submit()] == ["accepted", "rate_limited"]
    await submitter.aclose()


async def test_one_submission_the_database_refuses_does_not_fail_its_batch(
    db_pool: asyncpg.Pool, topology: Topology
) -> None:
    submitter = _submitter(db_pool, topology)
    user = await _user_with(db_pool, 10)
    # PostgreSQL text cannot hold NUL (the gateway refuses it first; this is the last line).
    urls = ["https://media.example/a.mp4", "https://media.example/\x00.mp4"]
    urls += ["https://media.example/b.mp4", "https://media.example/c.mp4"]
    answers = await asyncio.gather(
        *(submitter.submit(user_id=user, source_url=url) for url in urls),
        return_exceptions=True,
    )
    assert isinstance(answers[1], asyncpg.PostgresError)
    assert [a.outcome for n, a in enumerate(answers) if n != 1] == ["accepted"] * 3  # type: ignore[union-attr]
    async with db_pool.acquire() as con:
        assert await credits.balance(con, user) == 7
        stored = await con.fetch(
            "SELECT source_url FROM media.tasks WHERE user_id = $1 ORDER BY source_url", user
        )
    assert [r["source_url"] for r in stored] == [u for n, u in enumerate(urls) if n != 1]
    await submitter.aclose()


async def test_a_replayed_idempotency_key_in_the_same_batch_gets_the_first_task(
    db_pool: asyncpg.Pool, topology: Topology
) -> None:
    submitter = _submitter(db_pool, topology)
    user = await _user_with(db_pool, 10)
    same = {"idempotency_key": "k-1", "request_hash": b"body"}
    answers = await asyncio.gather(
        submitter.submit(user_id=user, source_url="https://media.example/a.mp4", **same),
        submitter.submit(user_id=user, source_url="https://media.example/a.mp4", **same),
        submitter.submit(
            user_id=user,
            source_url="https://media.example/b.mp4",
            idempotency_key="k-1",
            request_hash=b"other body",
        ),
    )
    assert sorted(a.outcome for a in answers) == [
        "accepted",
        "idempotency_conflict",
        "replayed",
    ]
    first = next(a for a in answers if a.outcome == "accepted")
    replayed = next(a for a in answers if a.outcome == "replayed")
    assert first.task is not None and replayed.task is not None
    assert replayed.task["id"] == first.task["id"]
    async with db_pool.acquire() as con:
        assert await credits.balance(con, user) == 9
    await submitter.aclose()


async def test_a_batch_cut_off_mid_statement_is_not_written_twice(
    db_pool: asyncpg.Pool, topology: Topology
) -> None:
    """A server that ends the connection may have committed first: those submissions are not
    tried again one by one (which could create each task twice); their callers get the error."""
    submitter = _submitter(db_pool, topology)
    user = await _user_with(db_pool, 10)
    async with db_pool.acquire() as holder, db_pool.acquire() as admin:
        held = holder.transaction()
        await held.start()
        # The user's event lock, which every submission of theirs takes first.
        await holder.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended('task_events:' || $1, 0))", user
        )
        submitting = asyncio.gather(
            *(
                submitter.submit(user_id=user, source_url=f"https://media.example/{n}.mp4")
                for n in range(3)
            ),
            return_exceptions=True,
        )
        for _ in range(200):
            waiting = await admin.fetchval(
                "SELECT pid FROM pg_stat_activity WHERE wait_event = 'advisory' AND pid <> $1",
                holder.get_server_pid(),
            )
            if waiting:
                break
            await asyncio.sleep(0.02)
        assert waiting, "the batch never waited for the lock"
        await admin.fetchval("SELECT pg_terminate_backend($1)", waiting)
        await held.rollback()  # a retry would now go through
        answers = await submitting
    assert all(isinstance(answer, Exception) for answer in answers), answers
    async with db_pool.acquire() as con:
        assert await con.fetchval("SELECT count(*) FROM media.tasks WHERE user_id = $1", user) == 0
        assert await credits.balance(con, user) == 10
    await submitter.aclose()
