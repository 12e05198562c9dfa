"""How the page looks and reads: axe-core finds no violation, light or dark, signed out or
with a history of every kind of task (and the delete dialog open); the page fits a phone
without sideways scrolling. Screenshots of each go to test-artifacts/."""

from __future__ import annotations

from pathlib import Path

from playwright.async_api import BrowserContext, Page, expect

from devstack import stack
from tests.browser.support import (
    accessibility_violations,
    newest_task,
    opened,
    sign_up,
    submit,
)
from tests.realtime.support import SlowOrigin

MIB = 1024 * 1024
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SCHEMES = ("light", "dark")


async def check(page: Page, artifacts: Path, name: str) -> None:
    """In both colour schemes: no axe-core violation, and a screenshot."""
    for scheme in SCHEMES:
        await page.emulate_media(color_scheme=scheme)
        assert await accessibility_violations(page) == [], f"{name}, {scheme}"
        await page.screenshot(path=artifacts / f"browser-{name}-{scheme}.png", full_page=True)


async def test_accessible_in_light_and_dark_and_fits_a_phone(
    running_stack: stack.StackConfig,
    browser: BrowserContext,
    slow_origin: SlowOrigin,
    audio_clip: str,
    artifacts_dir: Path,
) -> None:
    async with opened(browser, running_stack.public_url, artifacts_dir, "browser-look") as (
        page,
        _,
    ):
        await page.set_viewport_size(DESKTOP)
        await expect(page.get_by_role("button", name="Create account")).to_be_visible()
        await check(page, artifacts_dir, "signed-out")
        await sign_up(page)
        await expect(page.get_by_text("Nothing here yet")).to_be_visible()
        await check(page, artifacts_dir, "empty")

        # One task of each look: ready (sound only), failed, running.
        await page.get_by_label("Sound only").check()
        _, ready = await submit(page, audio_clip, 1)
        await expect(ready).to_have_attribute("data-status", "succeeded")
        await page.get_by_label("Video and sound").check()
        _, failed = await submit(page, f"{audio_clip.rsplit('/', 1)[0]}/missing.mp4", 2)
        await expect(failed).to_have_attribute("data-status", "failed")
        url, _ = slow_origin.sample(12 * MIB)
        await submit(page, url, 3)
        _, running = await newest_task(page, 3)
        await page.wait_for_function(
            "bar => bar.value > 0", arg=await running.get_by_role("progressbar").element_handle()
        )
        await check(page, artifacts_dir, "desktop")
        await page.set_viewport_size(PHONE)
        # Nothing wider than the screen: no sideways scrolling on a phone.
        assert await page.evaluate(
            "() => document.documentElement.scrollWidth <= window.innerWidth"
        )
        await check(page, artifacts_dir, "mobile")
        await page.set_viewport_size(DESKTOP)
        await running.get_by_role("button", name="Delete").click()
        await expect(page.get_by_role("dialog")).to_be_visible()
        await check(page, artifacts_dir, "delete-dialog")
        await page.get_by_role("dialog").get_by_role("button", name="Keep it").click()
        await running.get_by_role("button", name="Cancel").click()  # frees the worker
        await expect(running).to_have_attribute("data-status", "canceled")
