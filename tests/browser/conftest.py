"""Fixtures of the browser tests: Debian's headless Chromium driven by Playwright (one
browser, a fresh context per test), a slow media origin, a clip with sound, and a second
ingress whose ``/v1/events`` nginx refuses."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import Browser, BrowserContext, async_playwright, expect

from devstack import stack
from services.worker.tests import media_sources
from tests.browser.ingress import BLOCK_EVENTS
from tests.realtime.support import SlowOrigin

CHROMIUM = "/usr/bin/chromium"
# Headless flags for running as root on a machine without a display or network.
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
BYTES_PER_SECOND = 1024 * 1024
# The machine is shared: a job may wait for a worker longer than Playwright's default 5 s.
expect.set_options(timeout=20_000)


@pytest.fixture(scope="session")
async def chromium() -> AsyncIterator[Browser]:
    """One Chromium for the whole session; each test gets a fresh context (profile) of it."""
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,  # Playwright adds --headless
            args=CHROMIUM_FLAGS,
        )
        try:
            yield launched
        finally:
            await launched.close()


@asynccontextmanager
async def new_context(chromium: Browser, **options: Any) -> AsyncIterator[BrowserContext]:
    """A fresh profile (no cookies, no storage) that accepts downloads."""
    context = await chromium.new_context(accept_downloads=True, **options)
    context.set_default_timeout(20_000)
    try:
        yield context
    finally:
        await context.close()


@pytest.fixture
async def browser(
    chromium: Browser, running_stack: stack.StackConfig
) -> AsyncIterator[BrowserContext]:
    """A fresh Chromium profile per test, allowed to read and write the clipboard (pasting)."""
    async with new_context(chromium) as context:
        await context.grant_permissions(
            ["clipboard-read", "clipboard-write"], origin=running_stack.public_url
        )
        yield context


@pytest.fixture(scope="session")
def audio_clip(origin: tuple[str, Path]) -> str:
    """The URL of a short MP4 with sound (made by ffmpeg), on the fast local origin."""
    base_url, directory = origin
    media_sources.make_video("320x180", directory, "with-sound.mp4", duration=2)
    return f"{base_url}/with-sound.mp4"


@pytest.fixture(scope="session")
def slow_origin(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SlowOrigin]:
    with SlowOrigin(tmp_path_factory.mktemp("browser-origin"), BYTES_PER_SECOND) as origin:
        yield origin


@pytest.fixture(scope="module")
def blocked_events_stack(
    running_stack: stack.StackConfig, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[stack.StackConfig]:
    """A second ingress on its own port whose ``/v1/events`` answers 503, with its own auth
    and gateway so that PUBLIC_URL (cookies, the CSRF check) is this ingress's origin. The
    worker and the notifier are the first stack's: same database and broker."""
    config = dataclasses.replace(
        running_stack,
        run_dir=tmp_path_factory.mktemp("blocked-events"),
        ingress_port=stack.free_port(),
        ports={**running_stack.ports, "auth": stack.free_port(), "gateway": stack.free_port()},
        auth_internal_port=stack.free_port(),
        events_extra_nginx=BLOCK_EVENTS,
    )
    try:
        started = {service: stack.start_service(config, service) for service in ("auth", "gateway")}
        for service, process in started.items():
            stack.wait_healthy(config, service, process)
        stack.start_nginx(config)
        yield config
    finally:
        stack.down(config.run_dir, include_seaweedfs=False)
