"""The page's options and history in headless Chromium through nginx: sound only as MP3,
a failed task that looks finished and its retry with the same link and options, deleting,
and "more" paging through every task past the first pages."""

from __future__ import annotations

import secrets
import shutil
from pathlib import Path

import httpx
from playwright.async_api import BrowserContext, expect

from devstack import stack
from services.worker.tests import media_sources
from tests.browser.support import (
    animations,
    api_sign_up,
    api_task,
    download,
    link_field,
    newest_task,
    opened,
    sign_in,
    sign_up,
    submit,
    task_item,
)
from tests.realtime.support import SlowOrigin

MIB = 1024 * 1024


async def test_sound_only_as_mp3_gives_an_mp3_file_named_and_described_as_audio(
    running_stack: stack.StackConfig,
    browser: BrowserContext,
    audio_clip: str,
    artifacts_dir: Path,
    tmp_path: Path,
) -> None:
    async with opened(browser, running_stack.public_url, artifacts_dir, "browser-audio") as (
        page,
        _,
    ):
        await sign_up(page)
        await expect(page.get_by_label("Audio format")).to_be_hidden()
        await page.get_by_label("Sound only").check()
        # Quality is about video: asked for sound only, the page offers the audio format.
        await expect(page.get_by_label("Quality")).to_be_hidden()
        await page.get_by_label("Audio format").select_option(label="MP3")
        await link_field(page).fill(audio_clip)
        await link_field(page).press("Enter")
        task_id, item = await newest_task(page, 1)
        await expect(item).to_have_attribute("data-status", "succeeded")

        task = await api_task(page, task_id)
        assert task["options"] == {"quality": "best", "mode": "audio", "audio_format": "mp3"}
        filename = task["result"]["filename"]
        assert filename == "with-sound.mp3"
        await expect(item.get_by_role("heading")).to_have_text(filename)
        await expect(item.locator(".kind")).to_have_text("MP3")
        size = task["result"]["size"]
        await expect(item.locator(".meta li")).to_have_text(
            [
                "MP3 audio",
                f"{size / 1000:.1f} KB",
                "0:02",
                "Sound only, as MP3",
                audio_clip.split("/")[2],
                "just now",
            ]
        )
        saved = await download(page, item)
        assert saved.suggested_filename == filename
        local = tmp_path / filename
        await saved.save_as(local)
        streams = media_sources.ffprobe(local)["streams"]
        assert [(s["codec_type"], s["codec_name"]) for s in streams] == [("audio", "mp3")]  # type: ignore[index, union-attr]

        # The choice is remembered for the next visit.
        await page.reload()
        await expect(page.get_by_label("Sound only")).to_be_checked()
        await expect(page.get_by_label("Audio format")).to_have_value("mp3")


async def test_a_failed_task_looks_finished_and_retry_fetches_its_link_with_its_options(
    running_stack: stack.StackConfig,
    browser: BrowserContext,
    origin: tuple[str, Path],
    audio_clip: str,
    artifacts_dir: Path,
) -> None:
    base_url, directory = origin
    name = f"later-{secrets.token_hex(4)}.mp4"
    url = f"{base_url}/{name}"
    async with opened(browser, running_stack.public_url, artifacts_dir, "browser-retry") as (
        page,
        _,
    ):
        await sign_up(page)
        await page.get_by_label("Quality").select_option("720")
        failed_id, failed = await submit(page, url, 1)  # not on the origin yet: 404
        await expect(failed).to_have_attribute("data-status", "failed")
        # Finished: no bar, nothing moving, the reason in words, the credit back.
        await expect(failed.locator(".status")).to_have_text("Failed")
        await expect(failed.get_by_role("progressbar")).to_be_hidden()
        assert await animations(failed) == 0
        message = (await api_task(page, failed_id))["error"]["message"]
        await expect(failed.locator(".detail")).to_have_text(f"{message} Its credit was refunded.")
        await expect(page.locator("#credits")).to_contain_text("You have 10 credits.")
        await expect(failed.get_by_role("button", name="Cancel")).to_be_hidden()
        await expect(failed.get_by_role("link", name="Download")).to_be_hidden()
        await expect(failed.locator(".meta li.choice")).to_have_text("Up to 720p")

        # The source appears; Retry submits the same link with the same options.
        await page.get_by_label("Quality").select_option("best")  # the form's choice is not used
        shutil.copy(directory / audio_clip.rsplit("/", 1)[1], directory / name)
        await failed.get_by_role("button", name=f"Retry {name}").click()
        retried_id, retried = await newest_task(page, 2)
        assert retried_id != failed_id
        await expect(retried).to_have_attribute("data-status", "succeeded")
        first, second = await api_task(page, failed_id), await api_task(page, retried_id)
        assert second["source_url"] == first["source_url"] == url
        assert second["options"] == first["options"]
        assert first["options"]["quality"] == 720
        await expect(failed).to_have_attribute("data-status", "failed")  # history stays
        await expect(page.locator("#credits")).to_contain_text("You have 9 credits.")


async def test_delete_removes_a_task_and_its_file_after_asking(
    running_stack: stack.StackConfig,
    browser: BrowserContext,
    slow_origin: SlowOrigin,
    origin: tuple[str, Path],
    audio_clip: str,
    artifacts_dir: Path,
) -> None:
    # A link of its own: no other test's task shares its stored file.
    base_url, directory = origin
    clip = f"deleted-{secrets.token_hex(4)}.mp4"
    shutil.copy(directory / audio_clip.rsplit("/", 1)[1], directory / clip)
    async with opened(browser, running_stack.public_url, artifacts_dir, "browser-delete") as (
        page,
        _,
    ):
        await sign_up(page)
        done_id, done = await submit(page, f"{base_url}/{clip}", 1)
        await expect(done).to_have_attribute("data-status", "succeeded")
        long_url, _ = slow_origin.sample(10 * MIB)
        running_id, running = await submit(page, long_url, 2)
        await expect(running).to_have_attribute("data-status", "running")
        await expect(page.locator("#credits")).to_contain_text("You have 8 credits.")

        # Asked first; keeping it changes nothing.
        dialog = page.get_by_role("dialog", name="Delete this download?")
        name = long_url.rsplit("/", 1)[1]
        await running.get_by_role("button", name=f"Delete {name}").click()
        await expect(dialog).to_be_visible()
        await expect(dialog).to_contain_text("It is stopped first, and its credit refunded.")
        await dialog.get_by_role("button", name="Keep it").click()
        await expect(dialog).to_be_hidden()
        await expect(running).to_be_visible()

        # A running task: stopped, refunded and gone.
        await running.get_by_role("button", name=f"Delete {name}").click()
        await dialog.get_by_role("button", name="Delete").click()
        await expect(running).to_have_count(0)
        await expect(page.locator("#live")).to_have_text(f"{name} deleted.")
        await expect(page.locator("#credits")).to_contain_text("You have 9 credits.")
        # A finished one; the list is empty then, and says so.
        filename = (await api_task(page, done_id))["result"]["filename"]
        await done.get_by_role("button", name=f"Delete {filename}").click()
        await dialog.get_by_role("button", name="Delete").click()
        await expect(done).to_have_count(0)
        await expect(page.get_by_text("Nothing here yet")).to_be_visible()
        await expect(page.get_by_role("heading", name="Your downloads")).to_be_focused()

        # Gone for the API too, and after a reload.
        listed = await (await page.request.get(f"{running_stack.public_url}/v1/tasks")).json()
        assert listed["items"] == []
        for task_id in (done_id, running_id):
            gone = await page.request.get(f"{running_stack.public_url}/v1/tasks/{task_id}")
            assert gone.status == 404
        await page.reload()
        await expect(page.get_by_text("Nothing here yet")).to_be_visible()
        await expect(page.locator("#tasks > li")).to_have_count(0)


TASKS = 53  # more than 50, fewer than a user's 60 submits a minute


async def test_more_pages_through_every_task_past_50(
    running_stack: stack.StackConfig,
    browser: BrowserContext,
    origin: tuple[str, Path],
    artifacts_dir: Path,
) -> None:
    base_url, _ = origin
    # Made through the API, each canceled at once (refunded): many tasks for one credit.
    async with httpx.AsyncClient(base_url=running_stack.public_url, timeout=30) as client:
        email = await api_sign_up(client)
        for number in range(TASKS):
            url = f"{base_url}/gone-{number:02d}.mp4"
            created = await client.post("/v1/tasks", json={"url": url})
            assert created.status_code == 202, created.text
            canceled = await client.post(f"/v1/tasks/{created.json()['task']['id']}/cancel")
            assert canceled.status_code in {202, 409}  # 409: it failed first (404)
    async with opened(browser, running_stack.public_url, artifacts_dir, "browser-paging") as (
        page,
        _,
    ):
        await sign_in(page, email)
        names = page.locator("#tasks > li h3")
        more = page.get_by_role("button", name="Show older downloads")
        await expect(names).to_have_count(20)
        await expect(page.get_by_text("That is all of your downloads.")).to_be_hidden()
        await more.click()
        await expect(names).to_have_count(40)
        await expect(page.locator("#live")).to_have_text("20 older downloads shown.")
        await more.click()
        await expect(names).to_have_count(TASKS)
        await expect(more).to_be_hidden()
        await expect(page.get_by_text("That is all of your downloads.")).to_be_visible()
        # Every task once, newest first; none looks busy.
        assert await names.all_text_contents() == [
            f"gone-{number:02d}.mp4" for number in reversed(range(TASKS))
        ]
        await expect(page.locator("#tasks progress:visible")).to_have_count(0)
        statuses = await page.locator("#tasks > li").evaluate_all(
            "items => items.map(item => item.dataset.status)"
        )
        assert set(statuses) <= {"canceled", "failed"}
        first = await page.locator("#tasks > li").first.get_attribute("data-task-id")
        assert first
        await expect(task_item(page, first).get_by_role("button", name="Retry")).to_be_visible()
