"""Images reach LM Studio as images, for vision models only; anything else is a 422 saying why."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from support import PNG_BASE64, Harness

PNG = base64.b64decode(PNG_BASE64)
DATA_URL = "data:image/png;base64," + PNG_BASE64


@pytest.fixture
def vision(make_harness: Any) -> Harness:
    h: Harness = make_harness(models=["simulated-llm", "simulated-vlm:vision"])
    return h


def _ask(h: Harness, model: str, content: Any, **message: Any) -> Any:
    body = {"model": model, "inputs": [{"role": "user", "content": content, **message}]}
    with h.client() as client:
        return client.post("/v1/model/response", json=body)


def test_an_inline_image_reaches_a_vision_model(vision: Harness) -> None:
    content = [{"type": "text", "text": "What is this? [tokens=3]"}, {"type": "image", "image_url": DATA_URL}]
    response = _ask(vision, "simulated-vlm", content)
    assert response.status_code == 200, response.text
    record = vision.sim.predictions()[-1]
    assert len(record["images"]) == 1
    with vision.client() as client:
        messages = client.get(f"/v1/threads/{response.json()['thread_id']}/messages").json()["data"]
    assert messages[0]["metadata"]["images"][0]["mime_type"] == "image/png"


def test_a_stored_file_reaches_a_vision_model(vision: Harness) -> None:
    with vision.client() as client:
        upload = client.post("/v1/organizations/org_local/files/upload", files={"files": ("dot.png", PNG, "image/png")})
        assert upload.status_code == 201, upload.text
        file_id = upload.json()["files"][0]["id"]
    response = _ask(vision, "simulated-vlm", "Describe it [tokens=3]", files=[{"file_id": file_id}])
    assert response.status_code == 200, response.text
    assert len(vision.sim.predictions()[-1]["images"]) == 1


def test_a_model_without_vision_is_a_422(vision: Harness) -> None:
    response = _ask(vision, "simulated-llm", [{"type": "text", "text": "hi"}, {"type": "image", "image_url": DATA_URL}])
    assert response.status_code == 422, response.text
    assert "vision" in response.json()["error"]["message"] and vision.sim.predictions() == []


REFUSED = {
    "a web URL": ({"type": "image", "image_url": "https://example.com/cat.png"}, "data:"),
    "not base64": ({"type": "image", "data": "@@@"}, "base64"),
    "not an image": ({"type": "image", "data": base64.b64encode(b"plain text").decode()}, "PNG, JPEG"),
    "an unknown file": ({"type": "file", "file_id": "file_missing"}, "not found"),
}


@pytest.mark.parametrize("case", REFUSED.values(), ids=REFUSED.keys())
def test_what_cannot_be_an_image_is_refused(vision: Harness, case: tuple[dict[str, Any], str]) -> None:
    block, words = case
    response = _ask(vision, "simulated-vlm", [{"type": "text", "text": "hi"}, block])
    assert response.status_code in (404, 422), response.text
    assert words in response.json()["error"]["message"]
    with vision.client() as client:
        assert client.get("/v1/threads").json()["data"] == []


def test_a_stored_file_that_is_not_an_image_is_a_422(vision: Harness) -> None:
    with vision.client() as client:
        upload = client.post(
            "/v1/organizations/org_local/files/upload", files={"files": ("notes.txt", b"hello", "text/plain")}
        )
        file_id = upload.json()["files"][0]["id"]
    response = _ask(vision, "simulated-vlm", "Read it", files=[{"file_id": file_id}])
    assert response.status_code == 422 and "not images" in response.json()["error"]["message"]
