"""What the browser tests do as a user: open the page (watching its traffic and errors),
sign up or in, paste or type a link, download; and axe-core's accessibility check."""

from __future__ import annotations

import re
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import httpx
import pytest
from playwright.async_api import (
    BrowserContext,
    ConsoleMessage,
    Download,
    Locator,
    Page,
    Request,
    Response,
    expect,
)

TASK_URL = re.compile(r"/v1/tasks/[0-9a-f-]{36}$")
PASSWORD = "a long passphrase"
AXE = Path(__file__).with_name("node_modules") / "axe-core" / "axe.min.js"


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
    """The page at ``url``, watched; a screenshot of how it ended, pass or fail. No script
    error and no Content-Security-Policy violation may happen in it."""
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


def new_email() -> str:
    return f"browser-{secrets.token_hex(6)}@example.com"


async def sign_up(page: Page) -> str:
    """Create an account from the page; returns its email. The link field has the focus
    then, ready for a paste."""
    email = new_email()
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Create account").click()
    await expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
    await expect(link_field(page)).to_be_focused()
    return email


async def sign_in(page: Page, email: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()
    await expect(page.get_by_text(f"Signed in as {email}")).to_be_visible()
    await expect(link_field(page)).to_be_focused()


def link_field(page: Page) -> Locator:
    return page.get_by_label("Link to the media")


def task_item(page: Page, task_id: str) -> Locator:
    return page.locator(f'#tasks li[data-task-id="{task_id}"]')


async def newest_task(page: Page, count: int) -> tuple[str, Locator]:
    """Once the list holds ``count`` tasks: the id and list item of the first (newest)."""
    await expect(page.locator("#tasks > li")).to_have_count(count)
    task_id = await page.locator("#tasks > li").first.get_attribute("data-task-id")
    assert task_id
    return task_id, task_item(page, task_id)


async def paste(page: Page, url: str) -> None:
    """Paste ``url`` into the link field as a user would (clipboard, Ctrl+V)."""
    await page.evaluate("text => navigator.clipboard.writeText(text)", url)
    await link_field(page).focus()
    await page.keyboard.press("Control+V")


async def submit(page: Page, url: str, count: int) -> tuple[str, Locator]:
    """Type ``url`` and press Fetch; the list then holds ``count`` tasks. Returns the new
    task's id and its list item."""
    await link_field(page).fill(url)
    await page.get_by_role("button", name="Fetch").click()
    return await newest_task(page, count)


async def api_task(page: Page, task_id: str) -> dict[str, Any]:
    """The task as the API gives it to this page's user."""
    response = await page.request.get(urljoin(page.url, f"/v1/tasks/{task_id}"))
    assert response.ok, await response.text()
    task: dict[str, Any] = (await response.json())["task"]
    return task


async def download(page: Page, item: Locator) -> Download:
    """Click the task's download link; returns the finished download."""
    async with page.expect_download() as started:
        await item.get_by_role("link", name="Download").click()
    found = await started.value
    assert await found.failure() is None
    return found


async def animations(item: Locator) -> int:
    """How many animations run in ``item`` (a busy-looking task has some)."""
    count: int = await item.evaluate("element => element.getAnimations({subtree: true}).length")
    return count


async def accessibility_violations(page: Page) -> list[str]:
    """axe-core's violations on the page as it is, one line each (rule, impact, where)."""
    if not AXE.exists():
        pytest.fail(f"{AXE} is missing: `make deps` installs it (npm ci in tests/browser)")
    # Evaluated through the DevTools protocol, which the page's CSP does not govern: the
    # CSP stays as it is served.
    await page.evaluate(AXE.read_text())
    found = await page.evaluate(
        "() => axe.run(document, {resultTypes: ['violations']}).then(r => r.violations)"
    )
    return [
        f"{rule['id']} ({rule['impact']}): {rule['help']} at "
        + ", ".join(str(node["target"]) for node in rule["nodes"])
        for rule in found
    ]


async def api_sign_up(client: httpx.AsyncClient) -> str:
    """Sign up through the API (``client`` keeps the cookie); returns the email."""
    email = new_email()
    response = await client.post("/v1/auth/sign-up", json={"email": email, "password": PASSWORD})
    assert response.status_code == 201, response.text
    return email
