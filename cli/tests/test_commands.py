"""The command line itself, without a server: help a person can read, the global options in
either place, and progress lines that stay few without a terminal."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from mediaflow_cli.client import resolve, save_session
from mediaflow_cli.command import EXIT_CODES
from mediaflow_cli.main import build_parser
from mediaflow_cli.progress import Bar


def _every_parser() -> list[tuple[str, argparse.ArgumentParser]]:
    found = [("mediaflow", build_parser())]
    for name, parser in found:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                found.extend((f"{name} {sub}", child) for sub, child in action.choices.items())
    return found


def test_help_is_plain_text_and_the_exit_codes_are_listed() -> None:
    parsers = _every_parser()
    names = {name for name, _ in parsers}
    for command in ("sign-up", "submit", "list", "download", "keys create", "keys delete"):
        assert f"mediaflow {command}" in names
    for name, parser in parsers:
        text = parser.format_help()
        assert "``" not in text and ":class:" not in text, name
    root = parsers[0][1].format_help()
    for code, meaning in EXIT_CODES:
        assert f"{code:<4} {meaning}" in root


@pytest.mark.parametrize(
    "argv",
    [
        ["--json", "--url", "http://x.test", "keys", "list"],
        ["keys", "list", "--json", "--url", "http://x.test"],
        ["--json", "keys", "--url", "http://x.test", "list"],
    ],
)
def test_global_options_work_before_and_after_the_command(argv: list[str]) -> None:
    args = build_parser().parse_args(argv)
    assert (args.json, args.url) == (True, "http://x.test")


def test_global_options_given_before_are_kept_when_absent_after() -> None:
    args = build_parser().parse_args(["--json", "status", "some-id"])
    assert (args.json, args.url) == (True, None)
    assert build_parser().parse_args(["status", "some-id"]).json is False


def test_without_a_terminal_progress_is_a_few_lines(capsys: pytest.CaptureFixture[str]) -> None:
    total = 10_000
    with Bar("storing") as bar:
        assert not bar.live
        bar.update("queued", 0, None)
        for done in range(0, total + 1, 7):
            bar.update("running", done, total)
        bar.update("succeeded", total, total)
    lines = capsys.readouterr().err.splitlines()
    # queued, running at each 10 % step (0 to 90: the last steps of 7 stop short of 100), succeeded
    assert lines[0] == "storing queued 0 B"
    assert lines[1] == "storing running 0% of 9.8 KiB"
    assert lines[-1] == "storing succeeded 100% of 9.8 KiB"
    assert len(lines) == 1 + 10 + 1, lines


def test_a_saved_session_is_only_sent_to_its_own_origin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDIAFLOW_CONFIG", str(tmp_path / "session.json"))
    monkeypatch.delenv("MEDIAFLOW_URL", raising=False)
    monkeypatch.delenv("MEDIAFLOW_API_KEY", raising=False)
    save_session("http://media.example:8080", "secret-token")
    assert resolve(None) == ("http://media.example:8080", {"cookie": "mf_session=secret-token"})
    assert resolve("http://elsewhere.example") == ("http://elsewhere.example", {})
    monkeypatch.setenv("MEDIAFLOW_API_KEY", "mfk_key")
    assert resolve(None)[1] == {"authorization": "Bearer mfk_key"}


def test_the_readme_lists_the_exit_codes_of_the_help() -> None:
    readme = (Path(__file__).parents[2] / "README.md").read_text()
    for code, meaning in EXIT_CODES:
        assert f"| {code} | {meaning} |" in readme
