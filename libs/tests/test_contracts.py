from __future__ import annotations

from pathlib import Path

from mediaflow_libs import protogen
from mediaflow_libs.contracts import Job, Task, TaskEvent


def test_generated_contracts_match_proto_sources(tmp_path: Path) -> None:
    """Fails when proto/ changed without `make proto`."""
    fresh = protogen.generate(tmp_path)
    assert fresh, "protoc generated nothing"
    for path in fresh:
        committed = protogen.OUTPUT_DIR / path.name
        assert committed.exists(), f"{path.name} is not checked in; run `make proto`"
        assert committed.read_bytes() == path.read_bytes(), (
            f"{path.name} is stale; run `make proto`"
        )


def test_task_event_round_trips() -> None:
    event = TaskEvent(event_id=42, task=Task(id="t", user_id="u", status="running", progress=0))
    decoded = TaskEvent.FromString(event.SerializeToString())
    assert decoded.event_id == 42
    assert decoded.task.HasField("progress")
    assert decoded.task.progress == 0
    assert not decoded.task.HasField("bytes_total")
    assert Job.FromString(Job(task_id="t").SerializeToString()).task_id == "t"
