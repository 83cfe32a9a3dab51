"""The playground as a chat page (issue 16): layout at desktop and phone sizes, markdown, titles, errors, edits.

Real Chromium against a real server and the simulator; every step waits on page state, never on a sleep.
Screenshots go to pytest's `tmp_path` as test artifacts.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support import KEY, Harness, make_config, wait_until
from test_playground import (
    DESKTOP,
    PHONE,
    active_streams,
    bubbles,
    needs_browser,
    open_page,
    source_of,
)
from test_playground import browser as browser  # the fixture, shared

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

SIZES = {"desktop": DESKTOP, "phone": PHONE}
TALL = "() => { const m = document.getElementById('messages'); return m.scrollHeight > 2.5 * m.clientHeight; }"
AT_BOTTOM = """() => {
  const m = document.getElementById('messages');
  return m.scrollTop + m.clientHeight >= m.scrollHeight - 48;
}"""
LIST_STATE = """() => {
  const m = document.getElementById('messages');
  return {top: m.scrollTop, height: m.scrollHeight, client: m.clientHeight};
}"""


def list_state(page: Page) -> dict[str, float]:
    state: dict[str, float] = page.evaluate(LIST_STATE)
    return state


def send(page: Page, text: str) -> None:
    page.get_by_test_id("prompt").fill(text)
    page.get_by_test_id("send").click()


def send_and_complete(page: Page, text: str, answers: int) -> None:
    from playwright.sync_api import expect

    send(page, text)
    expect(bubbles(page, "assistant")).to_have_count(answers)
    expect(bubbles(page, "assistant").last).to_have_attribute("data-state", "completed")
    expect(page.get_by_test_id("send")).to_be_visible()


def stored_messages(h: Harness, thread_id: str) -> list[dict[str, Any]]:
    with h.client() as client:
        data: list[dict[str, Any]] = client.get(f"/v1/threads/{thread_id}/messages").json()["data"]
        return data


def only_thread(h: Harness) -> dict[str, Any]:
    with h.client() as client:
        threads: list[dict[str, Any]] = client.get("/v1/threads").json()["data"]
    assert len(threads) == 1
    return threads[0]


@needs_browser
@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_stop_stays_on_screen_through_a_long_stream(
    browser: Browser, make_harness: Any, tmp_path: Path, size: str
) -> None:
    from playwright.sync_api import expect

    # 3000 tokens at 80 tokens/s: about 40 s of answer, many screens long.
    h: Harness = make_harness(make_config(cancel={"quick_edit_seconds": 0.5}), tokens_per_second=80.0)
    page = open_page(browser, h, SIZES[size])
    send(page, "Tell me everything [tokens=3000]")
    stop = page.get_by_test_id("stop")
    expect(stop).to_be_in_viewport()
    expect(stop).to_contain_text("Esc")  # the shortcut is said where the button is
    where = stop.bounding_box()

    # The answer grows past two heights of the message list...
    page.wait_for_function(TALL)
    # ...yet only the list scrolls (the page never does), it follows the stream, and Stop has not moved.
    assert page.evaluate("document.scrollingElement.scrollHeight <= window.innerHeight")
    now = list_state(page)
    assert now["top"] + now["client"] >= now["height"] - 48, now
    expect(stop).to_be_in_viewport()
    assert stop.bounding_box() == where
    expect(page.get_by_test_id("jump-to-latest")).to_be_hidden()
    page.screenshot(path=str(tmp_path / f"streaming-{size}.png"))

    # Scrolling up detaches the list from the stream: it stays where the reader is, and says how to get back.
    page.get_by_test_id("messages").hover()
    page.mouse.wheel(0, -400)
    expect(page.get_by_test_id("jump-to-latest")).to_be_visible()
    held = list_state(page)
    page.wait_for_function(f"() => document.getElementById('messages').scrollHeight > {held['height'] + 300}")
    assert abs(list_state(page)["top"] - held["top"]) <= 2
    expect(stop).to_be_in_viewport()

    # Stop (late: keep_partial) works from there, and the partial answer stays, marked.
    wait_until(lambda: [s for s in active_streams(h) if s["cancel_mode_now"] == "keep_partial"])
    stop.click()
    assistant = bubbles(page, "assistant")
    expect(assistant.get_by_test_id("stopped-label")).to_be_visible()
    expect(stop).to_be_hidden()
    expect(page.get_by_test_id("send")).to_be_in_viewport()
    page.get_by_test_id("jump-to-latest").click()
    expect(page.get_by_test_id("jump-to-latest")).to_be_hidden()
    page.wait_for_function(AT_BOTTOM)
    page.screenshot(path=str(tmp_path / f"stopped-{size}.png"))
    with h.client() as client:
        assert client.get("/v1/usage").json()["data"][0]["cancel_mode"] == "keep_partial"


@needs_browser
def test_markdown_is_rendered_highlighted_and_sanitised(browser: Browser, make_harness: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    h: Harness = make_harness(tokens_per_second=0.0)
    page = open_page(browser, h)
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    send_and_complete(page, "Explain it [tokens=40]", answers=1)

    # The simulator's answer: "## Heading", **bold**, `code()` and a list, shown as such, not as raw marks.
    content = source_of(bubbles(page, "assistant"))
    expect(content.locator("h2")).to_have_count(1)
    expect(content.locator("strong")).to_have_count(1)
    expect(content.locator("code")).to_have_text(re.compile(r"\w+\(\)"))
    expect(content.locator("li").first).to_be_visible()
    expect(content).not_to_contain_text("##")
    expect(content).not_to_contain_text("**")

    # A fenced block is highlighted with a copy button; HTML in the answer is sanitised.
    thread = only_thread(h)
    answer = stored_messages(h, thread["id"])[1]
    code = 'def greet(name):\n    return f"hello {name}"'
    markdown = (
        f"### Code\n\n```python\n{code}\n```\n\n"
        '<img src="x" onerror="window.pwned = 1"> <script>window.pwned = 2</script>'
        '<a href="javascript:window.pwned = 3">link</a>'
    )
    with h.client() as client:
        patched = client.patch(f"/v1/threads/{thread['id']}/messages/{answer['id']}", json={"content": markdown})
        assert patched.status_code == 200, patched.text
    page.reload()
    page.get_by_test_id("thread-item").first.click()
    content = source_of(bubbles(page, "assistant"))
    expect(content.locator("h3")).to_have_text("Code")
    expect(content.locator("pre code.hljs.language-python")).to_have_text(code)
    expect(content.locator("pre code .hljs-keyword").first).to_have_text("def")
    assert content.locator("script, [onerror], a[href^='javascript']").count() == 0
    assert page.evaluate("window.pwned") is None
    content.get_by_test_id("copy-code").click()
    expect(content.get_by_test_id("copy-code")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == code
    page.screenshot(path=str(tmp_path / "markdown.png"))


@needs_browser
def test_threads_have_titles_and_can_be_renamed_pinned_and_deleted(browser: Browser, make_harness: Any) -> None:
    from playwright.sync_api import expect

    h: Harness = make_harness(tokens_per_second=0.0)
    page = open_page(browser, h)
    send_and_complete(page, "Plan a garden party for ten [tokens=5]", answers=1)

    # A title (the server's generateName, or the start of the message where it has none), never the id.
    first = only_thread(h)
    title = wait_until(lambda: only_thread(h)["title"])
    item_title = page.get_by_test_id("thread-title")
    expect(item_title).to_have_text(title)
    assert first["id"] not in title and not title.startswith("thrd_")

    # Rename by hand.
    page.get_by_test_id("thread-row").hover()
    page.get_by_test_id("thread-rename").click()
    page.get_by_test_id("thread-rename-input").fill("Garden party")
    page.get_by_test_id("thread-rename-input").press("Enter")
    expect(item_title).to_have_text("Garden party")
    assert only_thread(h)["title"] == "Garden party"

    # A second chat is listed first (newest); pinning the first brings it back to the top.
    page.get_by_test_id("new-thread").click()
    send_and_complete(page, "Another question [tokens=5]", answers=1)
    rows = page.get_by_test_id("thread-row")
    expect(rows).to_have_count(2)
    expect(rows.nth(1)).to_contain_text("Garden party")
    rows.nth(1).hover()
    rows.nth(1).get_by_test_id("thread-pin").click()
    expect(rows.first.get_by_test_id("thread-title")).to_have_text(re.compile(r"Garden party$"))
    expect(rows.first.get_by_test_id("thread-pin")).to_have_text("Unpin")
    with h.client() as client:
        assert client.get(f"/v1/threads/{first['id']}").json()["is_pinned"] is True

    # Delete asks once more before it deletes.
    rows.first.hover()
    rows.first.get_by_test_id("thread-delete").click()
    expect(rows).to_have_count(2)
    rows.first.get_by_test_id("thread-delete").click()
    expect(rows).to_have_count(1)
    with h.client() as client:
        assert client.get(f"/v1/threads/{first['id']}").status_code == 404


@needs_browser
@pytest.mark.parametrize("size", ["desktop", "phone"])
def test_a_wrong_key_is_said_on_the_key_screen(browser: Browser, make_harness: Any, tmp_path: Path, size: str) -> None:
    from playwright.sync_api import expect

    harness: Harness = make_harness(make_config(auth={"api_keys": [KEY]}))
    viewport = SIZES[size]
    page = browser.new_context(viewport=viewport).new_page()
    page.set_default_timeout(15_000)
    page.goto(harness.url + "/")
    form = page.get_by_test_id("key-form")
    expect(form).to_be_visible()
    expect(page.get_by_test_id("change-key")).to_be_hidden()  # no key button on the key screen
    box = form.bounding_box()
    assert box is not None and box["x"] >= 8 and box["x"] + box["width"] <= viewport["width"] - 8

    page.get_by_test_id("key-input").fill("not-the-key")
    page.get_by_test_id("key-save").click()
    error = page.get_by_test_id("key-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("did not accept this API key")
    expect(form).to_be_visible()
    expect(page.get_by_test_id("app")).to_be_hidden()
    assert page.evaluate("localStorage.getItem('lmstudio-proxy.api-key')") is None
    page.screenshot(path=str(tmp_path / f"wrong-key-{size}.png"))

    page.get_by_test_id("key-input").fill(KEY)
    page.get_by_test_id("key-save").click()
    expect(page.get_by_test_id("app")).to_be_visible()
    expect(page.get_by_test_id("change-key")).to_be_in_viewport()
    expect(page.get_by_test_id("model-select")).to_be_in_viewport()


@needs_browser
def test_a_failed_send_keeps_the_text_and_says_why_once(browser: Browser, make_harness: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    h: Harness = make_harness(tokens_per_second=0.0)
    page = open_page(browser, h)
    # The default model is named, and no attach button is offered for models without vision.
    expect(page.get_by_test_id("model-select").locator("option").first).to_have_text(re.compile(r"^Default \(.+\)$"))
    expect(page.get_by_test_id("attach")).to_be_hidden()

    h.sim.stop()  # LM Studio goes away
    send(page, "Hello while LM Studio is down")
    banner = page.get_by_test_id("error-banner")
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("LM Studio")
    expect(page.get_by_test_id("prompt")).to_have_value("Hello while LM Studio is down")
    expect(page.get_by_test_id("message")).to_have_count(0)
    expect(page.get_by_test_id("send")).to_be_enabled()
    message = page.get_by_test_id("error-text").inner_text()
    assert page.get_by_text(message, exact=False).count() == 1  # said once
    page.screenshot(path=str(tmp_path / "lmstudio-down.png"))


@needs_browser
def test_edit_a_sent_message_and_regenerate(browser: Browser, make_harness: Any) -> None:
    from playwright.sync_api import expect

    h: Harness = make_harness(tokens_per_second=0.0)
    page = open_page(browser, h)
    send_and_complete(page, "First question [tokens=5]", answers=1)
    send_and_complete(page, "Second question [tokens=5]", answers=2)
    thread_id = only_thread(h)["id"]

    # Editing the first message replaces it and everything after it.
    first = bubbles(page, "user").first
    first.hover()
    first.get_by_test_id("edit-message").click()
    page.get_by_test_id("edit-input").fill("Edited question [tokens=6]")
    page.get_by_test_id("edit-save").click()
    expect(bubbles(page, "user")).to_have_count(1)
    expect(bubbles(page, "user").get_by_test_id("message-content")).to_have_text("Edited question [tokens=6]")
    expect(bubbles(page, "assistant")).to_have_count(1)
    expect(bubbles(page, "assistant")).to_have_attribute("data-state", "completed")
    expect(page.get_by_test_id("send")).to_be_visible()
    stored = stored_messages(h, thread_id)
    assert [(m["role"], m["content"]) for m in stored][:1] == [("user", "Edited question [tokens=6]")]
    assert len(stored) == 2

    # Regenerate asks the model again for the same message: a new prediction, still two messages.
    before = len(h.sim.predictions())
    bubbles(page, "assistant").hover()
    bubbles(page, "assistant").get_by_test_id("regenerate").click()
    expect(bubbles(page, "assistant")).to_have_count(1)
    expect(bubbles(page, "assistant")).to_have_attribute("data-state", "completed")
    expect(page.get_by_test_id("send")).to_be_visible()
    assert len(h.sim.predictions()) == before + 1
    stored = stored_messages(h, thread_id)
    assert [m["role"] for m in stored] == ["user", "assistant"]
    expect(source_of(bubbles(page, "assistant"))).to_have_attribute("data-source", stored[1]["content"])


@needs_browser
def test_reasoning_is_shown_collapsed(browser: Browser, make_harness: Any) -> None:
    from playwright.sync_api import expect

    h: Harness = make_harness(tokens_per_second=0.0)
    page = open_page(browser, h)
    page.get_by_test_id("model-select").select_option("simulated-reasoner")
    send_and_complete(page, "Think first [tokens=5]", answers=1)
    reasoning = bubbles(page, "assistant").get_by_test_id("reasoning")
    expect(reasoning).to_have_count(1)
    expect(reasoning).not_to_have_attribute("open", "")
    expect(reasoning.locator("pre")).to_be_hidden()
    reasoning.locator("summary").click()
    expect(reasoning.locator("pre")).to_be_visible()
    expect(reasoning.locator("pre")).to_have_text(re.compile(r"\w"))


V5_MODELS = {
    "models": [
        {
            "id": "mdl_vision",
            "key": "simulated-llm",
            "name": "Simulated Vision",
            "is_visible_in_ui": True,
            "is_deprecated": False,
            "availability_status": "general_availability",
            "capabilities": ["vision", "trainedForToolUse"],
            "context_window": 4096,
        },
        {
            "id": "mdl_text",
            "key": "simulated-large",
            "name": "Simulated Text",
            "is_visible_in_ui": True,
            "is_deprecated": False,
            "availability_status": "general_availability",
            "capabilities": [],
        },
    ],
    "total_count": 2,
}
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c63f8cfc0f01f0005000201a5f1b2a40000000049454e44ae426082"
)


@needs_browser
def test_v5_model_listing_and_image_attachments(browser: Browser, make_harness: Any) -> None:
    """The endpoints being added (v5 models, the files API) answered by the browser itself, as documented."""
    import json

    from playwright.sync_api import Route, expect

    h: Harness = make_harness(tokens_per_second=0.0)
    sent: list[dict[str, Any]] = []
    upload_answers = [200]

    def models(route: Route) -> None:
        route.fulfill(json=V5_MODELS)

    def files(route: Route) -> None:
        if route.request.method == "GET":
            route.fulfill(json={"success": True, "files": [], "total": 0})
        elif upload_answers[0] == 200:
            stored = {"id": "file_1", "original_filename": "dot.png", "file_size": len(PNG), "mime_type": "image/png"}
            route.fulfill(json={"success": True, "message": "ok", "files": [stored], "total_uploaded": 1})
        else:
            error = {"code": "RESOURCE_NOT_FOUND", "message": "Not found"}
            route.fulfill(status=404, json={"success": False, "error": error})

    def create(route: Route) -> None:
        # The simulator has no vision model: answer here, as the server will for one that has.
        sent.append(json.loads(route.request.post_data or "{}"))
        events = [
            {"event": "response.processing", "status": "processing", "thread_id": "thrd_img", "message": "ok"},
            {
                "event": "response.created",
                "thread_id": "thrd_img",
                "user_message_id": "msg_u",
                "model": "simulated-llm",
            },
            {
                "event": "response.block",
                "block": {"type": "tool_call", "id": "c1", "tool_name": "zoom", "tool_arguments": {"x": 1}},
            },
            {"event": "response.content_delta", "delta": "A **red** dot."},
            {"event": "response.completed", "thread_id": "thrd_img", "response": "A **red** dot."},
        ]
        frames = "".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n"
        route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=frames)

    page = open_page_with_routes(browser, h, {"**/v1/models": models, "**/files**": files})
    page.route("**/v1/model/response", create)
    select = page.get_by_test_id("model-select")
    expect(select.locator("option")).to_have_count(3)
    expect(select.locator("option").nth(1)).to_have_text(re.compile(r"^Simulated Vision"))

    # The attach button is there for the vision model only.
    attach = page.get_by_test_id("attach")
    select.select_option("simulated-large")
    expect(attach).to_be_hidden()
    select.select_option("simulated-llm")
    expect(attach).to_be_visible()
    page.get_by_test_id("file-input").set_input_files({"name": "dot.png", "mimeType": "image/png", "buffer": PNG})
    expect(page.get_by_test_id("attachment")).to_have_count(1)
    send(page, "What is in this picture? [tokens=5]")
    expect(page.get_by_test_id("attachment")).to_have_count(0)
    expect(bubbles(page, "assistant")).to_have_attribute("data-state", "completed")
    expect(source_of(bubbles(page, "assistant")).locator("strong")).to_have_text("red")
    # A tool call is shown, collapsed.
    call = bubbles(page, "assistant").get_by_test_id("tool-call")
    expect(call.locator("summary")).to_have_text("Tool call: zoom")
    expect(call.locator("pre")).to_be_hidden()
    call.locator("summary").click()
    expect(call.locator("pre")).to_contain_text('"x": 1')
    assert sent[-1]["model"] == "simulated-llm"
    assert sent[-1]["inputs"] == [
        {"role": "user", "content": "What is in this picture? [tokens=5]", "files": [{"file_id": "file_1"}]}
    ]

    # An upload endpoint that answers 404 takes the button away, and says so.
    upload_answers[0] = 404
    page.get_by_test_id("file-input").set_input_files({"name": "dot.png", "mimeType": "image/png", "buffer": PNG})
    expect(page.get_by_test_id("error-banner")).to_contain_text("Could not attach dot.png")
    expect(attach).to_be_hidden()


def open_page_with_routes(browser: Browser, h: Harness, routes: dict[str, Any]) -> Page:
    from playwright.sync_api import expect

    context = browser.new_context(viewport=DESKTOP)
    for pattern, handler in routes.items():
        context.route(pattern, handler)
    page = context.new_page()
    page.set_default_timeout(15_000)
    page.goto(h.url + "/")
    page.get_by_test_id("key-input").fill(KEY)
    page.get_by_test_id("key-save").click()
    expect(page.get_by_test_id("app")).to_be_visible()
    return page


@needs_browser
def test_a_function_call_can_be_answered_by_hand(browser: Browser, make_harness: Any) -> None:
    from playwright.sync_api import expect

    h: Harness = make_harness(tokens_per_second=0.0)
    tool = {"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    with h.client() as client:  # a client app made the call; the user answers it in the playground
        first = client.post("/v1/model/response", json={"inputs": [{"content": "Call get_weather"}], "tools": [tool]})
    [call] = first.json()["tool_calls"]
    page = open_page(browser, h)
    page.get_by_test_id("thread-item").first.click()
    form = page.get_by_test_id("tool-answer")
    expect(form).to_be_visible()
    expect(bubbles(page, "assistant").last.get_by_test_id("tool-call")).to_have_count(1)
    page.get_by_test_id("tool-answer-input").fill('{"temperature": 21}')
    page.get_by_test_id("tool-answer-send").click()
    expect(bubbles(page, "assistant")).to_have_count(2)
    expect(bubbles(page, "assistant").last).to_have_attribute("data-state", "completed")
    expect(bubbles(page, "assistant").last).to_contain_text("temperature")
    expect(form).to_have_count(0)
    stored = stored_messages(h, first.json()["thread_id"])
    assert [m["role"] for m in stored] == ["user", "assistant", "tool", "assistant"]
    assert stored[2]["tool_call_id"] == call["id"] and stored[2]["content"] == '{"temperature": 21}'


@needs_browser
def test_mcp_calls_and_results_are_shown_collapsed_with_no_answer_form(
    browser: Browser, harness: Harness, mcp_server: Any
) -> None:
    from playwright.sync_api import expect

    tools = [{"type": "mcp", "server_label": "tests", "server_url": mcp_server.url}]
    with harness.client() as client:  # a client app ran two MCP rounds on this thread
        answer = client.post("/v1/model/response", json={"inputs": [{"content": "[tool=add>explode] 1 2"}],
                                                          "tools": tools})  # fmt: skip
    assert answer.json()["status"] == "completed"
    page = open_page(browser, harness)
    page.get_by_test_id("thread-item").first.click()
    calls = page.get_by_test_id("tool-call")
    expect(calls).to_have_count(2)
    expect(calls.first).to_contain_text("Tool call: add (MCP: tests)")
    results = page.get_by_test_id("tool-result")
    expect(results).to_have_count(2)
    expect(results.first).to_contain_text("Tool result: add (MCP: tests)")
    expect(results.last).to_contain_text("(error)")
    expect(results.first).not_to_have_attribute("open", "")  # collapsed
    results.first.locator("summary").click()
    expect(results.first.locator("pre")).to_have_text("3")
    expect(page.get_by_test_id("tool-answer")).to_have_count(0)  # the proxy ran them: nothing to answer
