"""The browser playground at `/`, driven in a real headless Chromium against a real server and the simulator."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support import KEY, Harness, make_config, wait_until

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, ViewportSize

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
# 400 tokens at 20 tokens/s: the answer streams for 20 s, far longer than any test step.
LONG_PROMPT = "Tell me a long story [tokens=400]"

needs_browser = pytest.mark.skipif(
    not CHROMIUM.exists() or importlib.util.find_spec("playwright") is None,
    reason="needs Debian's chromium at /usr/bin/chromium and the playwright package (pip install playwright)",
)


@pytest.fixture
def browser() -> Iterator[Browser]:
    # Plain (sync) tests and fixtures: the sync API must not run inside an event loop.
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


DESKTOP: ViewportSize = {"width": 1100, "height": 720}
PHONE: ViewportSize = {"width": 390, "height": 844}


def open_page(browser: Browser, h: Harness, viewport: ViewportSize = DESKTOP) -> Page:
    """A fresh browser context (empty localStorage) on the playground; enters the API key."""
    from playwright.sync_api import expect

    # Reduced motion: the phone's chat drawer opens and closes without a transition to wait for.
    context = browser.new_context(viewport=viewport, reduced_motion="reduce", has_touch=viewport == PHONE)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(h.url + "/")
    expect(page.get_by_test_id("key-form")).to_be_visible()
    page.get_by_test_id("key-input").fill(KEY)
    page.get_by_test_id("key-save").click()
    expect(page.get_by_test_id("app")).to_be_visible()
    return page


def source_of(locator: Any) -> Any:
    """The markdown a bubble shows (its text is rendered HTML; the source is kept beside it)."""
    return locator.get_by_test_id("message-content")


def bubbles(page: Page, role: str) -> Any:
    return page.locator(f'[data-testid="message"][data-role="{role}"]')


def send_and_wait_for_tokens(page: Page, text: str) -> None:
    from playwright.sync_api import expect

    page.get_by_test_id("prompt").fill(text)
    page.get_by_test_id("send").click()
    expect(bubbles(page, "assistant").last.get_by_test_id("message-content")).to_have_text(re.compile(r"\S"))
    expect(page.get_by_test_id("stop")).to_be_visible()


def active_streams(h: Harness) -> list[dict[str, Any]]:
    with h.client() as client:
        data: list[dict[str, Any]] = client.get("/v1/model/response/active").json()["data"]
        return data


def test_page_and_static_files_are_served(harness: Harness) -> None:
    with harness.client(key=None) as client:
        page = client.get("/")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert "default-src 'self'" in page.headers["content-security-policy"]
        for src in re.findall(r'(?:src|href)="(static/[^"]+)"', page.text):
            asset = client.get("/" + src)
            assert asset.status_code == 200, src
        script = client.get("/static/app.js")
        assert script.headers["content-type"].split(";")[0] in ("text/javascript", "application/javascript")
        missing = client.get("/static/nope.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "RESOURCE_NOT_FOUND"


@needs_browser
def test_stop_soon_after_sending_restores_the_message(browser: Browser, make_harness: Any) -> None:
    from playwright.sync_api import expect

    h: Harness = make_harness(tokens_per_second=20.0)
    page = open_page(browser, h)
    expect(page.get_by_test_id("thread-list")).to_have_attribute("data-loaded", "true")

    send_and_wait_for_tokens(page, LONG_PROMPT)
    expect(bubbles(page, "user")).to_have_count(1)
    expect(page.get_by_test_id("prompt")).to_have_value("")
    page.get_by_test_id("stop").click()

    # quick_edit (well within the default 5 s): the message is back in the box, both bubbles gone.
    expect(page.get_by_test_id("prompt")).to_have_value(LONG_PROMPT)
    expect(page.get_by_test_id("messages").get_by_test_id("message")).to_have_count(0)
    expect(page.get_by_test_id("stop")).to_be_hidden()
    expect(page.get_by_test_id("send")).to_be_enabled()
    # The server agrees: the prediction was really stopped, and the thread it created is gone.
    record = h.sim.wait_for(lambda ps: bool(ps) and ps[-1]["status"] != "running")[-1]
    assert record["status"] == "cancelled" and record["tokens_generated"] < 400
    with h.client() as client:
        assert client.get("/v1/threads").json()["data"] == []
        assert client.get("/v1/usage").json()["data"][0]["cancel_mode"] == "quick_edit"
    expect(page.get_by_test_id("thread-item")).to_have_count(0)


@needs_browser
def test_stop_late_keeps_the_partial_answer(browser: Browser, make_harness: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    h: Harness = make_harness(make_config(cancel={"quick_edit_seconds": 0.5}), tokens_per_second=20.0)
    page = open_page(browser, h)
    send_and_wait_for_tokens(page, LONG_PROMPT)
    # Past the threshold by the server's own clock, not by a sleep.
    wait_until(lambda: [s for s in active_streams(h) if s["cancel_mode_now"] == "keep_partial"])
    page.get_by_test_id("stop").click()

    assistant = bubbles(page, "assistant")
    expect(assistant).to_have_count(1)
    expect(assistant).to_have_class(re.compile(r"\bstopped\b"))
    expect(assistant.get_by_test_id("stopped-label")).to_have_text("stopped")
    expect(bubbles(page, "user")).to_have_count(1)
    expect(page.get_by_test_id("prompt")).to_have_value("")
    expect(page.get_by_test_id("stop")).to_be_hidden()

    with h.client() as client:
        threads = client.get("/v1/threads").json()["data"]
        assert len(threads) == 1
        thread_id = threads[0]["id"]
        stored = client.get(f"/v1/threads/{thread_id}/messages").json()["data"]
    assert [m["role"] for m in stored] == ["user", "assistant"]
    assert stored[1]["metadata"]["cancelled"] is True
    assert 0 < len(stored[1]["content"]) < 400 * 8
    # The page shows exactly what was saved.
    expect(source_of(assistant)).to_have_attribute("data-source", stored[1]["content"])

    # A reload keeps the key (localStorage) and lists what the server stored.
    page.reload()
    expect(page.get_by_test_id("app")).to_be_visible()
    items = page.get_by_test_id("thread-item")
    expect(items).to_have_count(len(threads))
    for item, thread in zip(items.all(), threads, strict=True):
        expect(item).to_have_attribute("data-thread-id", thread["id"])
        expect(item).to_have_attribute("data-message-count", str(thread["message_count"]))
    items.first.click()
    expect(bubbles(page, "user").get_by_test_id("message-content")).to_have_text(stored[0]["content"])
    expect(source_of(bubbles(page, "assistant"))).to_have_attribute("data-source", stored[1]["content"])
    expect(bubbles(page, "assistant").get_by_test_id("stopped-label")).to_be_visible()

    # The conversation goes on in the same thread with the model picked, and a normal answer completes.
    h.sim.set_settings(tokens_per_second=0.0)
    with h.client() as client:
        listing = client.get("/v1/models").json()
    # v5's shape ({models: [{key, ...}]}) or the older one ({data: [{id, ...}]}): the page reads both.
    model = listing["models"][-1]["key"] if "models" in listing else listing["data"][-1]["id"]
    page.get_by_test_id("model-select").select_option(model)
    page.get_by_test_id("prompt").fill("And now briefly [tokens=5]")
    page.get_by_test_id("prompt").press("Enter")
    expect(bubbles(page, "assistant")).to_have_count(2)
    expect(bubbles(page, "assistant").last).to_have_attribute("data-state", "completed")
    expect(page.get_by_test_id("thread-item")).to_have_count(1)
    expect(page.get_by_test_id("thread-item")).to_have_attribute("data-message-count", "4")
    with h.client() as client:
        stored = client.get(f"/v1/threads/{thread_id}/messages").json()["data"]
    assert len(stored) == 4
    assert h.sim.predictions()[-1]["model"] == model
    expect(source_of(bubbles(page, "assistant").last)).to_have_attribute("data-source", stored[3]["content"])

    page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
