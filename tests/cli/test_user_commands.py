"""Every user command of `mediaflow` through the real stack (nginx, the four services), run as
a process without a terminal, as a script runs it: results on stdout, `--json` parsed, the exit
codes of `mediaflow --help`, and never a traceback (the runner checks every call)."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx

from devstack import media, stack
from services.worker.tests import media_sources
from tests.cli.conftest import MEDIAFLOW, PASSWORD, Cli, EventsRefusingProxy, PacedOrigin


def _json(done: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    return dict(json.loads(done.stdout))


def _error(done: subprocess.CompletedProcess[str]) -> str:
    return str(_json(done)["error"]["code"])


def _sample(origin: tuple[str, Path], name: str, size: int = 200_000) -> tuple[str, str]:
    base_url, directory = origin
    return f"{base_url}/{name}", media.write_sample_mp4(directory / name, size)


def test_account_sign_out_and_sign_in_again(cli: Cli, running_stack: stack.StackConfig) -> None:
    me = _json(cli.ok("--json", "me"))
    assert (me["user"]["email"], me["credits"]["balance"]) == (cli.email, 10)
    assert cli.ok("me").stdout == "10\n"
    session_file = cli.home / "session.json"
    assert session_file.stat().st_mode & 0o777 == 0o600
    token = json.loads(session_file.read_text())["token"]

    assert _json(cli.ok("sign-out", "--json")) == {"signed_out": True}
    assert not session_file.exists()
    # Revoked on the server too, not only forgotten here.
    revoked = httpx.get(f"{running_stack.public_url}/v1/me", cookies={"mf_session": token})
    assert revoked.json()["code"] == "session_revoked"
    refused = cli.run("me")
    assert (refused.returncode, refused.stdout) == (3, "")
    assert "mediaflow sign-in" in refused.stderr

    # No password anywhere and no terminal to ask on: a clear message, exit 2.
    missing = cli.run("sign-in", cli.email)
    assert missing.returncode == 2
    assert "MEDIAFLOW_PASSWORD" in missing.stderr and "EOFError" not in missing.stderr
    wrong = cli.run("--json", "sign-in", cli.email, "--password-stdin", input="not it\n")
    assert (wrong.returncode, _error(wrong)) == (3, "invalid_credentials")
    taken = cli.run("sign-up", cli.email, MEDIAFLOW_PASSWORD=PASSWORD)
    assert taken.returncode == 4 and "email_taken" in taken.stderr

    signed_in = cli.ok("sign-in", cli.email, "--password-stdin", "--json", input=f"{PASSWORD}\n")
    assert _json(signed_in)["user"]["email"] == cli.email
    assert cli.ok("me").stdout == "10\n"


def test_submit_saves_the_file_and_its_sha256_is_the_tasks(
    cli: Cli, origin: tuple[str, Path]
) -> None:
    url, sha256 = _sample(origin, "cli-clip.mp4")
    submitted = cli.ok("submit", url, "-o", "out.mp4")
    task_id, path = submitted.stdout.splitlines()
    assert path == "out.mp4"
    assert media.sha256_of(cli.home / "out.mp4") == sha256
    task = _json(cli.ok("--json", "status", task_id))["task"]
    assert task["status"] == "succeeded"
    assert (task["result"]["sha256"], task["result"]["filename"]) == (sha256, "cli-clip.mp4")
    assert cli.ok("status", task_id).stdout == "succeeded\n"
    assert cli.ok("me").stdout == "9\n"
    assert not [p.name for p in cli.home.iterdir() if p.name.endswith(".part")]

    # By default the task's filename in the current directory, never over an existing file.
    assert cli.ok("download", task_id).stdout == "cli-clip.mp4\n"
    assert cli.ok("download", task_id).stdout == "cli-clip (1).mp4\n"
    assert media.sha256_of(cli.home / "cli-clip (1).mp4") == sha256
    (cli.home / "into").mkdir()
    saved = _json(cli.ok("download", task_id, "-o", "into", "--json"))
    assert saved["file"] == "into/cli-clip.mp4" and saved["task"]["id"] == task_id
    assert media.sha256_of(cli.home / "into" / "cli-clip.mp4") == sha256

    unwritable = cli.run("download", task_id, "-o", "no/such/dir/x.mp4")
    assert unwritable.returncode == 2 and "No such file or directory" in unwritable.stderr

    # The presigned URL alone, on one unwrapped line.
    printed = cli.ok("download", task_id, "--print-url").stdout
    assert printed.count("\n") == 1 and printed.startswith("http")
    assert hashlib.sha256(httpx.get(printed.strip()).content).hexdigest() == sha256

    # `-o -`: the file itself on stdout, for a pipe.
    piped = subprocess.run(
        [MEDIAFLOW, "download", task_id, "-o", "-"],
        capture_output=True,
        stdin=subprocess.DEVNULL,
        cwd=cli.home,
        env=cli.environment(),
        timeout=60,
        check=True,
    )
    assert hashlib.sha256(piped.stdout).hexdigest() == sha256


def test_submit_options_no_wait_and_watch(cli: Cli, origin: tuple[str, Path]) -> None:
    base_url, directory = origin
    media_sources.make_video("160x90", directory, "cli-av.mp4", duration=1)
    queued = _json(
        cli.ok(
            "submit",
            f"{base_url}/cli-av.mp4",
            "--audio",
            "--audio-format",
            "mp3",
            "--no-wait",
            "--json",
        )
    )["task"]
    assert queued["options"] == {"quality": "best", "mode": "audio", "audio_format": "mp3"}
    watched = _json(cli.ok("--json", "watch", queued["id"]))
    assert watched["file"] is None
    result = watched["task"]["result"]
    assert (result["content_type"], result["filename"]) == ("audio/mpeg", "cli-av.mp3")
    assert cli.ok("watch", queued["id"], "-o", "a.mp3").stdout == "succeeded\na.mp3\n"
    assert media.sha256_of(cli.home / "a.mp3") == result["sha256"]

    muted = cli.ok("submit", f"{base_url}/cli-av.mp4", "--quality", "360", "--mute", "--no-wait")
    task_id = muted.stdout.strip()
    assert _json(cli.ok("status", task_id, "--json"))["task"]["options"] == {
        "quality": 360,
        "mode": "mute",
        "audio_format": "original",
    }
    watch = cli.ok("watch", task_id)
    assert watch.stdout == "succeeded\n"


def test_list_pages_through_every_task(cli: Cli, origin: tuple[str, Path]) -> None:
    url, _ = _sample(origin, "cli-list.mp4", 50_000)
    ids = [cli.ok("submit", url, "--no-wait").stdout.strip() for _ in range(3)]
    listed = _json(cli.ok("list", "--json"))
    assert [task["id"] for task in listed["items"]] == ids[::-1]
    assert listed["next_cursor"] is None

    page = cli.ok("list", "--limit", "2")
    assert [row.split()[0] for row in page.stdout.splitlines()] == ids[:0:-1]
    assert "mediaflow list --cursor " in page.stderr
    cursor = page.stderr.split("--cursor ")[1].split()[0]
    rest = cli.ok("list", "--limit", "2", "--cursor", cursor)
    assert [row.split()[0] for row in rest.stdout.splitlines()] == ids[:1]
    every = _json(cli.ok("list", "--limit", "1", "--all", "--json"))
    assert [task["id"] for task in every["items"]] == ids[::-1]


def test_a_failed_task_exits_one_and_is_refunded(cli: Cli, origin: tuple[str, Path]) -> None:
    base_url, _ = origin
    failed = cli.run("submit", f"{base_url}/cli-missing.mp4")
    assert failed.returncode == 1
    assert "source_http_error" in failed.stderr
    task_id = failed.stdout.strip()  # the id only: no file was saved
    as_json = cli.run("--json", "watch", task_id)
    assert as_json.returncode == 1
    assert _json(as_json)["task"]["error"]["code"] == "source_http_error"
    assert cli.run("status", task_id).returncode == 1
    not_ready = cli.run("--json", "download", task_id)
    assert (not_ready.returncode, _error(not_ready)) == (4, "task_not_ready")
    assert cli.ok("me").stdout == "10\n"


def test_cancel_a_running_task(cli: Cli, paced_origin: PacedOrigin) -> None:
    task_id = cli.ok(
        "submit", paced_origin.paced("cli-cancel.mp4", 1 << 20, 60), "--no-wait"
    ).stdout.strip()
    canceled = cli.ok("cancel", task_id)
    assert canceled.stdout == "canceled\n"
    status = cli.run("status", task_id)
    assert (status.returncode, status.stdout) == (1, "canceled\n")
    again = cli.run("--json", "cancel", task_id)
    assert (again.returncode, _error(again)) == (4, "task_finished")
    assert cli.ok("me").stdout == "10\n"


def test_delete_a_task(cli: Cli, origin: tuple[str, Path]) -> None:
    url, _ = _sample(origin, "cli-delete.mp4", 50_000)
    task_id = cli.ok("submit", url, "-o", "kept.mp4").stdout.splitlines()[0]
    assert _json(cli.ok("delete", task_id, "--json")) == {"deleted": task_id}
    gone = cli.run("--json", "status", task_id)
    assert (gone.returncode, _error(gone)) == (4, "task_not_found")
    assert task_id not in cli.ok("list").stdout
    again = cli.run("delete", task_id)
    assert again.returncode == 4 and "task_not_found" in again.stderr


def test_api_keys(cli: Cli, tmp_path: Path) -> None:
    created = cli.ok("keys", "create", "ci")
    key = created.stdout.strip()
    assert key.startswith("mfk_") and "shown once" in created.stderr
    # Another machine with no session at all, only the key.
    elsewhere = Cli(cli.public_url, tmp_path / "elsewhere")
    elsewhere.home.mkdir()
    assert elsewhere.run("me").returncode == 3
    assert elsewhere.ok("me", MEDIAFLOW_API_KEY=key).stdout == "10\n"

    listed = _json(cli.ok("keys", "list", "--json"))["items"]
    assert [item["name"] for item in listed] == ["ci"]
    assert listed[0]["last_used_at"] is not None
    key_id = cli.ok("keys", "list").stdout.split()[0]
    assert key_id == listed[0]["id"]

    assert _json(cli.ok("keys", "delete", key_id, "--json")) == {"deleted": key_id}
    refused = elsewhere.run("--json", "me", MEDIAFLOW_API_KEY=key)
    assert refused.returncode == 3, refused.stderr
    assert _error(refused) in {"session_invalid", "session_revoked"}
    missing = cli.run("keys", "delete", key_id)
    assert missing.returncode == 4 and "api_key_not_found" in missing.stderr
    assert cli.ok("keys", "list").stdout == ""


def test_bad_input_and_no_server_are_one_line_and_an_exit_code(cli: Cli) -> None:
    usage = cli.run("submit")
    assert usage.returncode == 2 and "usage: mediaflow submit" in usage.stderr
    no_format_without_audio = cli.run("submit", "http://127.0.0.1/x.mp4", "--audio-format", "mp3")
    assert no_format_without_audio.returncode == 2
    invalid = cli.run("--json", "submit", "not a url")
    assert (invalid.returncode, _error(invalid)) == (4, "invalid_url")
    unknown = cli.run("status", "no-such-task")
    assert unknown.returncode == 4 and "task_not_found" in unknown.stderr
    assert cli.ok("me").stdout == "10\n"  # none of it charged anything

    nobody = cli.run("--url", f"http://127.0.0.1:{stack.free_port()}", "--json", "me")
    assert (nobody.returncode, _error(nobody)) == (5, "unreachable")
    assert "cannot reach http://127.0.0.1:" in nobody.stderr


def test_a_task_is_polled_when_the_event_stream_is_refused(
    cli: Cli, paced_origin: PacedOrigin, events_refused: EventsRefusingProxy
) -> None:
    behind = Cli(events_refused.url, cli.home / "behind-a-proxy", cli.email)
    behind.home.mkdir()
    behind.ok("sign-in", cli.email, MEDIAFLOW_PASSWORD=PASSWORD)
    done = behind.ok("submit", paced_origin.paced("polled.mp4", 100_000, 4), "--json")
    task = _json(done)["task"]
    assert task["status"] == "succeeded" and _json(done)["file"] == "polled.mp4"
    assert media.sha256_of(behind.home / "polled.mp4") == task["result"]["sha256"]
    assert "storing running" in done.stderr  # followed while it ran, not only at the end
