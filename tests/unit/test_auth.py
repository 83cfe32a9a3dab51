"""What a 401 says: with auth off it names the headers a key goes in; with keys, it does not tell
a missing key from a wrong one."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from .support import KEY, InProcess, make_config

OPEN = "Missing API key: send any non-empty key in the X-API-Key header (or api-key, or Authorization: Bearer)"
CLOSED = "Invalid or missing API key (X-API-Key, api-key or Authorization: Bearer)"


@pytest.mark.parametrize(
    ("api_keys", "key", "message"),
    [
        ([], None, OPEN),
        ([], "   ", OPEN),  # blank is missing
        ([KEY], None, CLOSED),
        ([KEY], "not-the-key", CLOSED),
    ],
    ids=["open-missing", "open-blank", "keys-missing", "keys-wrong"],
)
async def test_401_message(
    make_api: Callable[..., InProcess], api_keys: list[str], key: str | None, message: str
) -> None:
    api = make_api(make_config(auth={"api_keys": api_keys}))
    client = api.client(None)
    headers = {"X-API-Key": key} if key is not None else {}
    response = await client.get("/v1/threads", headers=headers)
    assert response.status_code == 401
    assert response.json()["error"]["message"] == message


@pytest.mark.parametrize(
    "headers",
    [{"X-API-Key": "any"}, {"api-key": "any"}, {"Authorization": "Bearer any"}],
    ids=["x-api-key", "api-key", "bearer"],
)
async def test_every_header_the_message_names_is_accepted(api: InProcess, headers: dict[str, str]) -> None:
    response = await api.client(None).get("/v1/threads", headers=headers)
    assert response.status_code == 200, response.text
