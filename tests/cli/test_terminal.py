"""What `mediaflow` does on a terminal (a pseudo-terminal it owns, as in a shell) and what it
does without one: the progress bar redraws in place, or is a few plain lines; a password is
asked for only where someone can type it."""

from __future__ import annotations

import re
import secrets

from devstack import media
from tests.cli.conftest import PASSWORD, Cli, PacedOrigin

SIZE = 400_000
SECONDS = 3  # long enough for several progress events (the worker sends one each 0.5 s at most)


def test_sign_up_and_sign_in_ask_for_the_password_on_a_terminal(cli: Cli) -> None:
    fresh = Cli(cli.public_url, cli.home / "fresh", f"cli-{secrets.token_hex(4)}@example.com")
    fresh.home.mkdir()
    answer = f"{PASSWORD}\n".encode()
    code, shown = fresh.in_terminal(
        "sign-up", fresh.email, answers={b"Password: ": answer, b"Password again: ": answer}
    )
    assert code == 0, shown
    assert PASSWORD not in shown  # typed without echo
    assert f"signed in to {cli.public_url} as {fresh.email}" in shown
    code, shown = fresh.in_terminal("sign-in", fresh.email, answers={b"Password: ": b"wrong one\n"})
    assert code == 3 and "invalid_credentials" in shown


def test_the_bar_redraws_in_place_on_a_terminal(cli: Cli, paced_origin: PacedOrigin) -> None:
    code, shown = cli.in_terminal("submit", paced_origin.paced("tty.mp4", SIZE, SECONDS))
    assert code == 0, shown
    lines = shown.split("\n")
    task_id = lines[1].strip()
    # One line for the bar, rewritten (carriage return, erase line) as the task goes on.
    storing = [line for line in lines if "storing" in line]
    assert len(storing) == 1, lines
    redraws = storing[0].split("\r\x1b[2K")
    percents = {int(p) for p in re.findall(r"(\d+)%", storing[0])}
    assert len(redraws) > 3 and len(percents) > 2, storing[0]
    assert (
        media.sha256_of(cli.home / "tty.mp4")
        == cli.run("--json", "status", task_id).stdout.split('"sha256": "')[1][:64]
    )


def test_without_a_terminal_progress_is_a_few_plain_lines(
    cli: Cli, paced_origin: PacedOrigin
) -> None:
    done = cli.ok("submit", paced_origin.paced("plain.mp4", SIZE, SECONDS))
    assert "\x1b" not in done.stderr and "\r" not in done.stderr
    storing = [line for line in done.stderr.splitlines() if line.startswith("storing ")]
    # At most a line per status and per 10 % step: never one per percent, never a repeat.
    assert 2 <= len(storing) <= 3 + 11, storing
    assert len(set(storing)) == len(storing)
    assert storing[-1] == f"storing succeeded 100% of {SIZE / 1024:.1f} KiB"
    assert done.stdout.splitlines()[1] == "plain.mp4"
