"""The web page in headless Chromium through nginx, as a user sees it: sign up, paste a link,
watch the bar reach 100 %, download; live over the event stream, and by polling when nginx
refuses the stream, returning to live once it can. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Locator,
    Page,
    Request,
    Response,
    expect,
)

from devstack import media, stack
from mediaflow_gateway.web_page import CONTENT_SECURITY_POLICY
from tests.browser.ingress import set_events_blocked
from tests.realtime.support import SlowOrigin

MIB = 1024 * 1024
TASK_URL = re.compile(r"/v1/tasks/[0-9a-f-]{36}$")


@dataclass
class Traffic:
    """What the page asked for, and what went wrong in it."""

    polls: list[Request] = field(default_factory=list)  # GET /v1/tasks/{id}
    event_statuses: list[int] = field(default_factory=list)  # answers to GET /v1/events
    page_errors: list[str] = field(default_factory=list)

    def polls_of(self, task_id: str) -> list[Request]:
        return [request for request in self.polls if request.url.endswith(task_id)]


@asynccontextmanager
async def opened(
    browser: BrowserContext, url: str, artifacts: Path, name: str
) -> AsyncIterator[tuple[Page, Traffic]]:
    """The page at ``url``, watched; a screenshot of how it ended, pass or fail."""
    page = browser.pages[0] if browser.pages else await browser.new_page()
    traffic = Traffic()

    def on_request(request: Request) -> None:
        if request.method == "GET" and TASK_URL.search(request.url):
            traffic.polls.append(request)

    def on_response(response: Response) -> None:
        if "/v1/events" in response.url:
            traffic.event_statuses.append(response.status)

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            traffic.page_errors.append(message.text)

    page.on("request", on_request)
    page.on("response", on_response)
    page.on("console", on_console)
    page.on("pageerror", lambda error: traffic.page_errors.append(str(error)))
    await page.goto(url)
    try:
        yield page, traffic
    finally:
        await page.screenshot(path=artifacts / f"{name}.png", full_page=True)
    assert traffic.page_errors == []


PASSWORD = "a long passphrase"


async def sign_up(page: Page) -> str:
    """Create an account from the page; returns its email."""
    email = f"browser-{secrets.token_hex(6)}@example.com"
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_text("Signed in as")).to_be_visible()
    await expect(page.get_by_text("10 credits")).to_be_visible()
    return email


async def submit(page: Page, url: str) -> tuple[str, Locator]:
    """Paste ``url`` and fetch it; returns the task id and its list item."""
    await page.get_by_label("Media URL").fill(url)
    await page.get_by_role("button", name="Fetch").click()
    item = page.locator("#tasks li", has_text=url)
    await expect(item).to_have_count(1)
    task_id = await item.get_attribute("data-task-id")
    assert task_id
    return task_id, item


async def download(page: Page, item: Locator) -> str:
    """Click the task's download link; returns the SHA-256 of what the browser saved."""
    async with page.expect_download() as started:
        await item.get_by_role("link", name="Download").click()
    saved = await (await started.value).path()
    return media.sha256_of(Path(saved))


async def test_sign_up_submit_and_watch_the_bar_reach_100_live(
    running_stack: stack.StackConfig,
    browser: BrowserContext,
    slow_origin: SlowOrigin,
    artifacts_dir: Path,
) -> None:
    async with opened(browser, running_stack.public_url, artifacts_dir, "browser-live") as (
        page,
        traffic,
    ):
        email = await sign_up(page)
        await expect(page.locator("#connection")).to_have_attribute("data-mode", "live")

        url, sha256 = slow_origin.sample(3 * MIB)
        task_id, item = await submit(page, url)
        bar = item.get_by_role("progressbar")
        # The bar moves while bytes arrive (progress events every 0.5 s of a ~3 s job)...
        await page.wait_for_function(
            "bar => bar.value > 0 && bar.value < 100", arg=await bar.element_handle()
        )
        # ...and ends full, with a download link.
        await expect(bar).to_have_attribute("value", "100")
        await expect(item.get_by_role("link", name="Download")).to_be_visible()
        await expect(item).to_contain_text("Done: 3.1 MB stored.")
        await expect(page.get_by_text("9 credits")).to_be_visible()
        assert await download(page, item) == sha256
        # Live: the stream spoke for the task, so it was polled at most once (a poll may
        # fall between the submit's answer and the task's first event).
        assert len(traffic.polls_of(task_id)) <= 1, traffic.polls_of(task_id)
        assert set(traffic.event_statuses) == {200}

        # Errors in words: a problem's `detail`, and a failed task's `error.message`.
        await page.get_by_label("Media URL").fill("ftp://media.example/clip.mp4")
        await page.get_by_role("button", name="Fetch").click()
        await expect(page.get_by_role("alert")).to_have_text(
            "Only http and https URLs can be fetched."
        )
        missing = f"{url.rsplit('/', 1)[0]}/no-such-clip.mp4"
        task_id, item = await submit(page, missing)
        await expect(item).to_have_attribute("data-status", "failed")
        response = await page.request.get(f"{running_stack.public_url}/v1/tasks/{task_id}")
        message = (await response.json())["task"]["error"]["message"]
        await expect(item).to_contain_text(f"Failed: {message}")

        # A running task can be canceled from the page (and its credit comes back).
        long_url, _ = slow_origin.sample(10 * MIB)
        _, item = await submit(page, long_url)
        await expect(item).to_have_attribute("data-status", "running")
        await expect(page.get_by_text("8 credits")).to_be_visible()
        await item.get_by_role("button", name="Cancel").click()
        await expect(item).to_have_attribute("data-status", "canceled")
        await expect(item).to_contain_text("Canceled.")
        await expect(item.get_by_role("button", name="Cancel")).to_be_hidden()
        await expect(page.get_by_text("9 credits")).to_be_visible()

        # A sign-out that fails says so, and the page does not pretend it worked.
        problem = {"title": "Service Unavailable", "status": 503, "code": "auth_unavailable"}
        problem |= {"type": "about:blank", "detail": "Try again shortly.", "request_id": "r"}
        await page.route(
            "**/v1/auth/sign-out",
            lambda route: route.fulfill(
                status=503, content_type="application/problem+json", body=json.dumps(problem)
            ),
        )
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("alert")).to_have_text(
            "Signing out failed: Try again shortly."
        )
        await expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
        await page.unroute("**/v1/auth/sign-out")

        # Signed out and back in, the tasks are listed again, download link and all.
        await page.get_by_role("button", name="Sign out").click()
        await expect(page.get_by_role("alert")).to_have_text("You are signed out.")
        await page.get_by_label("Email").fill(email)
        await page.get_by_label("Password").fill("not the password")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_have_text("The email or password is wrong.")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
        done = page.locator("#tasks li", has_text=url)
        await expect(done.get_by_role("link", name="Download")).to_be_visible()
        await expect(page.locator("#tasks li")).to_have_count(3)


async def test_with_events_blocked_the_page_polls_to_the_end_then_returns_to_live(
    blocked_events_stack: stack.StackConfig,
    browser: BrowserContext,
    slow_origin: SlowOrigin,
    artifacts_dir: Path,
) -> None:
    config = blocked_events_stack
    async with opened(browser, config.public_url, artifacts_dir, "browser-back-to-live") as (
        page,
        traffic,
    ):
        await sign_up(page)
        await expect(page.locator("#connection")).to_have_attribute("data-mode", "polling")

        # A ~5 s job: polled at least twice, with If-None-Match once an ETag is known.
        url, sha256 = slow_origin.sample(5 * MIB)
        task_id, item = await submit(page, url)
        await expect(item.get_by_role("progressbar")).to_have_attribute(
            "value", "100", timeout=20_000
        )
        await expect(item.get_by_role("link", name="Download")).to_be_visible()
        assert await download(page, item) == sha256
        await page.screenshot(path=artifacts_dir / "browser-polled-to-the-end.png", full_page=True)
        polls = traffic.polls_of(task_id)
        assert len(polls) >= 2
        assert all([await poll.header_value("if-none-match") for poll in polls[1:]])
        assert traffic.event_statuses
        assert set(traffic.event_statuses) == {503}

        # nginx lets streams through again: the page goes back to live updates by itself.
        set_events_blocked(config, blocked=False)
        try:
            await expect(page.locator("#connection")).to_have_attribute(
                "data-mode", "live", timeout=15_000
            )
            url, _ = slow_origin.sample(2 * MIB)
            task_id, item = await submit(page, url)
            await expect(item.get_by_role("progressbar")).to_have_attribute("value", "100")
            await expect(item.get_by_role("link", name="Download")).to_be_visible()
            assert len(traffic.polls_of(task_id)) <= 1
        finally:
            set_events_blocked(config, blocked=True)


async def test_page_and_assets_are_typed_and_under_a_strict_csp(
    running_stack: stack.StackConfig,
) -> None:
    expected = {
        "/": "text/html; charset=utf-8",
        "/assets/app.js": "text/javascript; charset=utf-8",
        "/assets/app.css": "text/css; charset=utf-8",
        "/assets/icon.svg": "image/svg+xml",
    }
    async with httpx.AsyncClient(base_url=running_stack.public_url) as client:
        for path, content_type in expected.items():
            response = await client.get(path)
            assert response.status_code == 200, path
            assert response.headers["content-type"] == content_type
            assert response.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
            assert response.headers["x-content-type-options"] == "nosniff"
            etag = response.headers["etag"]
            again = await client.get(path, headers={"If-None-Match": etag})
            assert again.status_code == 304
            assert again.content == b""
        missing = await client.get("/assets/nothing.js")
        assert missing.status_code == 404
        assert missing.headers["content-type"].startswith("application/problem+json")
    assert "script-src 'self';" in CONTENT_SECURITY_POLICY
    assert "unsafe-inline" not in CONTENT_SECURITY_POLICY
