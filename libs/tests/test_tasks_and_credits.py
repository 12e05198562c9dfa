"""The task state machine and the credit ledger against the real database."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import pytest

from mediaflow_libs import credits, task_transitions
from mediaflow_libs.amqp import Topology


@pytest.fixture
def topology(infra) -> Topology:  # type: ignore[no-untyped-def]
    # The session's own names: the outbox rows written here are published by other tests' relays.
    return Topology(infra.amqp_namespace)


async def _new_task(con: asyncpg.Connection, balance: int = 3) -> tuple[str, str]:
    user_id = str(uuid.uuid4())
    await credits.ensure_account(con, user_id, balance)
    task_id = str(
        await con.fetchval(
            """INSERT INTO media.tasks (user_id, source_url, cost)
               VALUES ($1, 'https://x.example/v', 1) RETURNING id""",
            user_id,
        )
    )
    assert await credits.charge(con, user_id, task_id, 1)
    return user_id, task_id


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        (["running", "running", "succeeded"], [True, True, True]),
        (["canceled", "running"], [True, False]),
        (["succeeded"], [False]),
        (["running", "failed", "succeeded"], [True, True, False]),
        (["failed", "canceled"], [True, False]),
    ],
)
async def test_only_legal_transitions_happen(
    db_pool: asyncpg.Pool, topology: Topology, path: list[str], allowed: list[bool]
) -> None:
    async with db_pool.acquire() as con:
        _, task_id = await _new_task(con)
        outcomes = []
        for target in path:
            async with con.transaction():
                outcomes.append(
                    await task_transitions.transition(con, topology, task_id, target) is not None
                )
        events = await con.fetch(
            "SELECT status FROM media.task_events WHERE task_id = $1 ORDER BY id", task_id
        )
    assert outcomes == allowed
    assert [e["status"] for e in events] == [t for t, ok in zip(path, allowed, strict=True) if ok]


async def test_refund_happens_once_whoever_asks(db_pool: asyncpg.Pool, topology: Topology) -> None:
    async with db_pool.acquire() as con:
        user_id, task_id = await _new_task(con, balance=3)
        assert await credits.balance(con, user_id) == 2
        async with con.transaction():
            assert await task_transitions.transition(con, topology, task_id, "failed") is not None
        # A second component noticing the failure cannot refund again.
        assert not await credits.refund(con, user_id, task_id)
        assert await credits.balance(con, user_id) == 3
        refunds = await con.fetchval(
            "SELECT count(*) FROM media.credit_ledger WHERE task_id = $1 AND reason = 'refund'",
            task_id,
        )
    assert refunds == 1


async def test_balance_cannot_go_negative(db_pool: asyncpg.Pool) -> None:
    async with db_pool.acquire() as con:
        user_id, _ = await _new_task(con, balance=1)
        other = str(
            await con.fetchval(
                """INSERT INTO media.tasks (user_id, source_url, cost)
                   VALUES ($1, 'https://x.example/w', 1) RETURNING id""",
                user_id,
            )
        )
        assert not await credits.charge(con, user_id, other, 1)
        assert await credits.balance(con, user_id) == 0


async def test_transition_outside_a_transaction_is_a_bug(
    db_pool: asyncpg.Pool, topology: Topology
) -> None:
    async with db_pool.acquire() as con:
        _, task_id = await _new_task(con)
        with pytest.raises(RuntimeError):
            await task_transitions.transition(con, topology, task_id, "running")


async def test_a_users_events_commit_in_the_order_of_their_ids(
    db_pool: asyncpg.Pool, topology: Topology
) -> None:
    """SSE resumes with `Last-Event-ID` and replays `id > cursor`: an event of the user
    committing after one with a higher id would never be replayed. So a second event of the
    same user waits for the first one's commit; another user's does not."""
    async with db_pool.acquire() as setup:
        user_id, first = await _new_task(setup)
        second = str(
            await setup.fetchval(
                """INSERT INTO media.tasks (user_id, source_url, cost)
                   VALUES ($1, 'https://x.example/w', 1) RETURNING id""",
                user_id,
            )
        )
        _, someone_elses = await _new_task(setup)
    async with db_pool.acquire() as early, db_pool.acquire() as late, db_pool.acquire() as other:
        open_transaction = early.transaction()
        await open_transaction.start()
        try:
            # The first event has its id, uncommitted.
            assert await task_transitions.transition(early, topology, first, "running") is not None
            async with other.transaction():
                assert await task_transitions.transition(other, topology, someone_elses, "running")

            async def second_event() -> None:
                async with late.transaction():
                    assert await task_transitions.transition(late, topology, second, "running")

            pending = asyncio.create_task(second_event())
            for _ in range(200):
                assert not pending.done(), "an event committed past an earlier uncommitted one"
                waiting = await other.fetchval(
                    "SELECT wait_event FROM pg_stat_activity WHERE pid = $1",
                    late.get_server_pid(),
                )
                if waiting == "advisory":
                    break
                await asyncio.sleep(0.05)
            else:
                raise AssertionError("the second event never waited for the first one's commit")
        finally:
            await open_transaction.commit()
        await pending
        rows = await other.fetch(
            "SELECT task_id FROM media.task_events WHERE user_id = $1 ORDER BY id", user_id
        )
    assert [str(row["task_id"]) for row in rows] == [first, second]
