"""The web page in headless Chromium through nginx, as a user sees it: sign up, paste a link
(it starts by itself), watch it live (the bar, the tab's title), download it under its name;
live over the event stream, and by polling when nginx refuses the stream, returning to live
once it can. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
from playwright.async_api import BrowserContext, expect

from devstack import media, stack
from mediaflow_gateway.web_page import CONTENT_SECURITY_POLICY
from tests.browser.ingress import set_events_blocked
from tests.browser.support import (
    animations,
    api_task,
    download,
    link_field,
    newest_task,
    opened,
    paste,
    sign_in,
    sign_up,
    submit,
)
from tests.realtime.support import SlowOrigin

MIB = 1024 * 1024


async def test_sign_up_paste_watch_it_live_and_download_it_under_its_name(
    running_stack: stack.StackConfig,
    browser: BrowserContext,
    slow_origin: SlowOrigin,
    artifacts_dir: Path,
) -> None:
    async with opened(browser, running_stack.public_url, artifacts_dir, "browser-live") as (
        page,
        traffic,
    ):
        await expect(page.get_by_label("Email")).to_be_focused()
        email = await sign_up(page)
        await expect(page.locator("#connection")).to_have_attribute("data-mode", "live")
        credits = page.locator("#credits")
        await expect(credits).to_have_text(
            "You have 10 credits. Each download costs 1 credit, charged when it starts."
            " A download that fails or is canceled is refunded."
        )
        await expect(page.get_by_text("Nothing here yet")).to_be_visible()

        # Pasted, the link starts by itself: no click on Fetch.
        url, sha256 = slow_origin.sample(3 * MIB)
        name = url.rsplit("/", 1)[1]
        await paste(page, url)
        task_id, item = await newest_task(page, 1)
        await expect(link_field(page)).to_have_value("")
        await expect(link_field(page)).to_be_focused()
        await expect(page.get_by_text("Nothing here yet")).to_be_hidden()
        await expect(item.get_by_role("heading")).to_have_text(name)
        bar = item.get_by_role("progressbar", name=f"Progress of {name}")
        # The bar moves while bytes arrive (progress events every 0.5 s of a ~3 s job), the
        # tab's title says how far, and the task looks busy...
        await page.wait_for_function(
            "bar => bar.value > 0 && bar.value < 100", arg=await bar.element_handle()
        )
        await expect(page).to_have_title(re.compile(rf"^\d+% · {re.escape(name)} · mediaflow$"))
        await expect(item.locator(".status")).to_have_text("Downloading")
        assert await animations(item) > 0
        # ...then it is ready: no bar, no animation, its file described, a download link.
        await expect(item.locator(".status")).to_have_text("Ready")
        await expect(page).to_have_title("mediaflow")
        await expect(bar).to_be_hidden()
        assert await animations(item) == 0
        task = await api_task(page, task_id)
        filename = task["result"]["filename"]
        await expect(item.get_by_role("heading")).to_have_text(filename)
        host = url.split("/")[2]
        await expect(item.locator(".meta li")).to_have_text(
            ["MP4 video", "3.1 MB", host, "just now"]
        )
        await expect(page.locator("#live")).to_have_text(f"{filename} is ready to download.")
        await expect(credits).to_contain_text("You have 9 credits.")
        saved = await download(page, item)
        assert saved.suggested_filename == filename
        assert media.sha256_of(Path(await saved.path())) == sha256
        # Live: the stream spoke for the task, so it was polled at most once (a poll may
        # fall between the submit's answer and the task's first event).
        assert len(traffic.polls_of(task_id)) <= 1, traffic.polls_of(task_id)
        assert set(traffic.event_statuses) == {200}

        # Errors in words: a problem's `detail`, and a failed task's `error.message`.
        await link_field(page).fill("ftp://media.example/clip.mp4")
        await page.get_by_role("button", name="Fetch").click()
        await expect(page.get_by_role("alert")).to_have_text(
            "Only http and https URLs can be fetched."
        )
        missing = f"{url.rsplit('/', 1)[0]}/no-such-clip.mp4"
        task_id, item = await submit(page, missing, 2)
        await expect(item).to_have_attribute("data-status", "failed")
        message = (await api_task(page, task_id))["error"]["message"]
        await expect(item.locator(".detail")).to_have_text(f"{message} Its credit was refunded.")

        # A running task can be canceled from the page (and its credit comes back).
        long_url, _ = slow_origin.sample(10 * MIB)
        _, item = await submit(page, long_url, 3)
        await expect(item).to_have_attribute("data-status", "running")
        await expect(credits).to_contain_text("You have 8 credits.")
        await item.get_by_role("button", name="Cancel").click()
        await expect(item).to_have_attribute("data-status", "canceled")
        await expect(item.locator(".detail")).to_have_text("Canceled. Its credit was refunded.")
        await expect(item.get_by_role("button", name="Cancel")).to_be_hidden()
        await expect(item.get_by_role("progressbar")).to_be_hidden()
        await expect(credits).to_contain_text("You have 9 credits.")

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
        await expect(page.get_by_label("Email")).to_be_focused()
        await page.get_by_label("Email").fill(email)
        await page.get_by_label("Password").fill("not the password")
        await page.get_by_role("button", name="Sign in").click()
        await expect(page.get_by_role("alert")).to_have_text("The email or password is wrong.")
        await sign_in(page, email)
        done = page.locator("#tasks li", has_text=filename)
        await expect(done.get_by_role("link", name=f"Download {filename}")).to_be_visible()
        await expect(page.locator("#tasks > li")).to_have_count(3)


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
        task_id, item = await submit(page, url, 1)
        await expect(item).to_have_attribute("data-status", "succeeded", timeout=20_000)
        saved = await download(page, item)
        assert media.sha256_of(Path(await saved.path())) == sha256
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
            task_id, item = await submit(page, url, 2)
            await expect(item).to_have_attribute("data-status", "succeeded")
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
