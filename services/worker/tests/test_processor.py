"""Delivery handling that needs no infrastructure."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from mediaflow_libs.contracts import Job
from mediaflow_worker.settlement import handle_delivery


@dataclass
class Delivery:
    """Stands in for aio-pika's incoming message; records how it was settled."""

    body: bytes
    message_id: str = "m-1"
    settled: list[tuple[str, bool]] = field(default_factory=list)

    async def ack(self) -> None:
        self.settled.append(("ack", False))

    async def nack(self, requeue: bool = True) -> None:
        self.settled.append(("nack", requeue))

    async def reject(self, requeue: bool = False) -> None:
        self.settled.append(("reject", requeue))


@pytest.mark.parametrize(
    "body",
    [
        b"\xff\xff not protobuf",
        b"",  # decodes to an empty Job: no task id
        Job(task_id="not-a-uuid", user_id="also-not").SerializeToString(),
    ],
)
async def test_a_malformed_job_is_dead_lettered_not_retried(body: bytes) -> None:
    delivery = Delivery(body)
    resources: Any = None  # never reached: the message is refused before any work
    await handle_delivery(delivery, resources)  # type: ignore[arg-type]
    assert delivery.settled == [("reject", False)]
