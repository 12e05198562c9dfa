"""`mediaflow diagnose` passes on a healthy stack and names each misconfiguration."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import serving
from devstack import stack
from mediaflow_auth.app import create_app as create_auth
from mediaflow_auth.settings import AuthSettings
from mediaflow_cli.diagnose import diagnose


def _services(config: stack.StackConfig) -> dict[str, str]:
    return {name: config.service_url(name) for name in stack.SERVICES}


def _failed(result) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {c.name: c.detail for c in result.checks if not c.ok}


async def test_diagnose_passes_on_a_healthy_stack(running_stack: stack.StackConfig) -> None:
    result = await diagnose(
        running_stack.public_url, _services(running_stack), running_stack.database_url
    )
    assert _failed(result) == {}
    assert len(result.checks) >= 10
    tools = next(c for c in result.checks if c.name == "worker has ffmpeg and yt-dlp")
    assert "ffmpeg 5" in tools.detail and "yt-dlp 20" in tools.detail, tools.detail


async def test_diagnose_names_a_mismatched_public_url(
    running_stack: stack.StackConfig, infra
) -> None:  # type: ignore[no-untyped-def]
    odd = AuthSettings(**infra.settings_kwargs(public_url="http://media.example:8080"))
    async with serving(create_auth(odd)) as auth:
        services = _services(running_stack) | {"auth": auth}
        result = await diagnose(running_stack.public_url, services, running_stack.database_url)
    failed = _failed(result)
    assert "PUBLIC_URL identical across services" in failed
    assert "auth=http://media.example:8080" in failed["PUBLIC_URL identical across services"]


async def test_diagnose_names_a_mismatched_service_credential(
    running_stack: stack.StackConfig, infra
) -> None:  # type: ignore[no-untyped-def]
    odd = AuthSettings(
        **infra.settings_kwargs(
            service_secret="another-secret-" + "z" * 40, public_url=running_stack.public_url
        )
    )
    async with serving(create_auth(odd)) as auth:
        services = _services(running_stack) | {"auth": auth}
        result = await diagnose(running_stack.public_url, services, running_stack.database_url)
    failed = _failed(result)
    assert set(failed) == {"service credential identical across services"}, failed
    assert (
        "auth vs" in failed["service credential identical across services"]
        or "vs auth" in failed["service credential identical across services"]
    )


async def test_diagnose_names_a_cookie_that_cannot_reach_the_browser(infra) -> None:  # type: ignore[no-untyped-def]
    port = stack.free_port()
    # Users reach it over http, but PUBLIC_URL says https: the cookie comes back Secure.
    settings = AuthSettings(**infra.settings_kwargs(public_url=f"https://127.0.0.1:{port}"))
    async with serving(create_auth(settings), port=port) as auth:
        result = await diagnose(auth, {"auth": auth}, infra.database_url)
    failed = _failed(result)
    assert "PUBLIC_URL is the URL in use" in failed
    # The cookie is named and flagged for https, which this http URL never sends back.
    assert "Secure over http" in failed["session cookie reaches the browser"]


def _run_diagnose(config: stack.StackConfig, *services: str) -> subprocess.CompletedProcess[str]:
    """The `mediaflow diagnose --json` command, as an operator runs it."""
    arguments = [f"--service={name}={url}" for name, url in _services(config).items()]
    arguments += [f"--service={service}" for service in services]
    return subprocess.run(
        [
            str(Path(sys.executable).parent / "mediaflow"),  # the workspace's console script
            "--url",
            config.public_url,
            "diagnose",
            "--json",
            "--database-url",
            config.database_url,
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_command_exits_zero_when_healthy_and_one_naming_the_failure(
    running_stack: stack.StackConfig,
) -> None:
    healthy = _run_diagnose(running_stack)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    report = json.loads(healthy.stdout)
    assert report["ok"] is True and all(check["ok"] for check in report["checks"])

    # A notifier nobody answers for: the command says which check failed, and exits 1.
    broken = _run_diagnose(running_stack, f"notifier=http://127.0.0.1:{stack.free_port()}")
    assert broken.returncode == 1, broken.stdout + broken.stderr
    failed = {c["name"]: c for c in json.loads(broken.stdout)["checks"] if not c["ok"]}
    assert any("notifier" in check["detail"] for check in failed.values()), failed
    assert all(check["fix"] for check in failed.values()), failed
