"""The credit ledger: every movement is a ledger row; the balance can never go negative
and a task is refunded at most once (both enforced by the schema)."""

from __future__ import annotations

import asyncpg


def amount(credits: int) -> str:
    """``1 credit``, ``2 credits``: a number of credits in words people read."""
    return f"{credits} credit" if credits == 1 else f"{credits} credits"


async def ensure_account(con: asyncpg.Connection, user_id: str, signup_credits: int) -> None:
    """Open the user's account with the sign-up grant, once."""
    await con.execute("SELECT media.open_credit_account($1, $2)", user_id, signup_credits)


async def balance(con: asyncpg.Connection, user_id: str) -> int:
    value = await con.fetchval(
        "SELECT balance FROM media.credit_accounts WHERE user_id = $1", user_id
    )
    return int(value or 0)


async def charge(con: asyncpg.Connection, user_id: str, task_id: str, cost: int) -> bool:
    """Take ``cost`` credits for a task; False when the balance is too low (or there is no
    account). The account row stays locked until the caller's commit. A submission is
    charged the same way inside ``media.submit_task``, which refuses before it writes."""
    return bool(
        await con.fetchval("SELECT media.charge_credits($1, $2, $3)", user_id, task_id, cost)
    )


async def refund(con: asyncpg.Connection, user_id: str, task_id: str) -> bool:
    """Give back what the task was charged; a second call for the same task does nothing."""
    amount = await con.fetchval(
        """INSERT INTO media.credit_ledger (user_id, task_id, delta, reason)
           SELECT user_id, task_id, -delta, 'refund' FROM media.credit_ledger
           WHERE task_id = $1 AND reason = 'charge'
           ON CONFLICT (task_id, reason) WHERE task_id IS NOT NULL DO NOTHING
           RETURNING delta""",
        task_id,
    )
    if amount is None:
        return False
    await con.execute(
        "UPDATE media.credit_accounts SET balance = balance + $2 WHERE user_id = $1",
        user_id,
        amount,
    )
    return True


async def grant(
    con: asyncpg.Connection, user_id: str, amount: int, note: str, signup_credits: int
) -> int:
    """Give ``amount`` credits for the reason ``note``: one ledger row, and the balance, in the
    caller's transaction; returns the new balance. An account never opened is opened first,
    with its sign-up grant, as the user's first visit would have."""
    await ensure_account(con, user_id, signup_credits)
    await con.execute(
        """INSERT INTO media.credit_ledger (user_id, delta, reason, note)
           VALUES ($1, $2, 'grant', $3)""",
        user_id,
        amount,
        note,
    )
    balance: int = await con.fetchval(
        """UPDATE media.credit_accounts SET balance = balance + $2 WHERE user_id = $1
           RETURNING balance""",
        user_id,
        amount,
    )
    return balance
