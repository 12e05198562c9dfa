"""The README stays true: its first commands and its configuration table."""

from __future__ import annotations

from devstack import config_doc, stack

README = stack.REPO_ROOT / "README.md"


def test_readme_starts_with_the_two_commands() -> None:
    head = README.read_text().splitlines()[:10]
    assert any(line.startswith("make run") for line in head)
    assert any(line.startswith("make test") for line in head)


def test_configuration_table_matches_the_settings_classes() -> None:
    text = README.read_text()
    assert config_doc.with_table(text) == text, "run `make docs` to refresh the README's table"
    for variable in (
        "PUBLIC_URL",
        "EGRESS_ALLOW_CIDRS",
        "SIGNUP_CREDITS",
        "TASK_COST_CREDITS",
        "MAX_MEDIA_BYTES",
    ):
        assert f"`{variable}`" in text
