"""The v5 `files` group against the real server: the real SDK, sync and async, bytes on disk."""

from __future__ import annotations

import hashlib
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from aitronos import Aitronos, AsyncAitronos
from aitronos.core.api_error import ApiError
from aitronos.errors.unprocessable_entity_error import UnprocessableEntityError
from aitronos.types import FileBatchUploadResponse, FileContentResponse, FileListResponse, FileResponse
from support import KEY, OTHER_KEY, Harness, make_config

from proxy.files import FileStore

ORG = "org_local"


def png() -> bytes:
    """A real 1x1 PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\0\xff\0\0"))
        + chunk(b"IEND", b"")
    )


PNG = png()
JSON = b'{"answer": 42}'


def v5(harness: Harness, key: str = KEY) -> Aitronos:
    http = httpx.Client(timeout=30)
    harness.closers.append(http.close)
    return Aitronos(api_key=key, base_url=harness.url, httpx_client=http)


def store_of(harness: Harness) -> FileStore:
    files: FileStore = harness.server.app.state.files
    return files


def on_disk(harness: Harness) -> list[str]:
    directory = store_of(harness).directory
    return sorted(p.name for p in directory.iterdir())


def envelope(exc: ApiError, status: int, code: str) -> dict[str, Any]:
    assert exc.status_code == status, exc.body
    assert isinstance(exc.body, dict) and exc.body["success"] is False
    error: dict[str, Any] = exc.body["error"]
    assert error["status"] == status and error["code"] == code, error
    return error


def test_v5_files_round_trip(harness: Harness) -> None:
    client = v5(harness)
    # The PNG is sent claiming to be text: its mime type comes from its bytes.
    uploaded = client.files.upload_file(ORG, files=[("dot.png", PNG, "text/plain"), ("data.json", JSON)])
    assert isinstance(uploaded, FileBatchUploadResponse)
    assert uploaded.success and uploaded.total_uploaded == 2
    image, data = uploaded.files
    assert isinstance(image, FileResponse)
    assert (image.original_filename, image.file_size, image.mime_type) == ("dot.png", len(PNG), "image/png")
    assert (data.mime_type, data.organization_id) == ("application/json", ORG)
    assert image.id.startswith("file_") and image.uploaded_at.tzinfo is not None
    assert sorted(on_disk(harness)) == sorted([image.id, data.id])
    assert (store_of(harness).directory / image.id).read_bytes() == PNG

    listed = client.files.list_files(ORG)
    assert isinstance(listed, FileListResponse)
    assert [f.id for f in listed.files] == [data.id, image.id]  # newest first
    assert (listed.total, listed.page, listed.has_more) == (2, 1, False)
    page2 = client.files.list_files(ORG, page=2, limit=1)
    assert [f.id for f in page2.files] == [image.id] and not page2.has_more
    assert client.files.list_files(ORG, page=1, limit=1).has_more

    got = client.files.get_file(ORG, image.id)
    assert got == image

    content = client.files.get_file_content(ORG, image.id)
    assert isinstance(content, FileContentResponse)
    assert (content.file_id, content.filename, content.mime_type, content.file_size) == (
        image.id, "dot.png", "image/png", len(PNG),
    )  # fmt: skip
    # The download URL needs no key, as v5's signed URLs.
    raw = httpx.get(content.download_url)
    assert raw.status_code == 200 and raw.content == PNG
    assert raw.headers["content-type"] == "image/png"
    assert raw.headers["x-content-type-options"] == "nosniff"
    assert raw.headers["content-disposition"].startswith("attachment")
    # The SDK's download parses JSON (its declared type is Any): a JSON file comes back parsed.
    link = httpx.URL(client.files.get_file_content(ORG, data.id).download_url)
    parsed = client.files.download_file_content(
        ORG, data.id, token=link.params["token"], expires=int(link.params["expires"])
    )
    assert parsed == {"answer": 42}

    client.files.delete_file(ORG, image.id)
    assert on_disk(harness) == [data.id]
    with pytest.raises(ApiError) as missing:
        client.files.get_file(ORG, image.id)
    envelope(missing.value, 404, "RESOURCE_NOT_FOUND")
    assert httpx.get(content.download_url).status_code == 404
    assert [f.id for f in client.files.list_files(ORG).files] == [data.id]


async def test_async_v5_files(harness: Harness) -> None:
    async with httpx.AsyncClient(timeout=30) as http:
        client = AsyncAitronos(api_key=KEY, base_url=harness.url, httpx_client=http)
        uploaded = await client.files.upload_file(ORG, files=[("a.json", JSON, "application/json")])
        file = uploaded.files[0]
        got = await client.files.get_file(ORG, file.id)
        assert got.model_extra == {"sha256": hashlib.sha256(JSON).hexdigest()}
        assert [f.id for f in (await client.files.list_files(ORG)).files] == [file.id]
        content = await client.files.get_file_content(ORG, file.id)
        link = httpx.URL(content.download_url)
        token, expires = link.params["token"], int(link.params["expires"])
        assert await client.files.download_file_content(ORG, file.id, token=token, expires=expires) == {"answer": 42}
        await client.files.delete_file(ORG, file.id)
        assert on_disk(harness) == []
        assert (await client.files.list_files(ORG)).total == 0

        urls = await client.files.generate_upload_url(
            ORG, request={"files": [{"filename": "b.png", "file_size": len(PNG)}]}
        )
        target = urls["files"][0]
        put = await http.put(target["upload_url"], content=PNG)
        assert put.status_code == 200 and put.json()["complete"] is True
        registered = await client.files.register_file(ORG, request={"files": [{"file_id": target["file_id"]}]})
        assert registered["files"][0]["mime_type"] == "image/png"
        assert (await client.files.get_file(ORG, target["file_id"])).file_size == len(PNG)


def owner() -> str:
    from proxy.auth import owner_of

    return owner_of(KEY)


def test_upload_url_then_register(harness: Harness) -> None:
    client = v5(harness)
    urls = client.files.generate_upload_url(
        ORG, request={"files": [{"filename": "big.png", "file_size": len(PNG), "mime_type": "image/png"},
                                {"file_name": "whole.json", "size": len(JSON)}]},
    )  # fmt: skip
    assert urls["success"] is True and urls["total"] == 2
    chunked, whole = urls["files"]
    assert chunked["method"] == "PUT" and chunked["upload_url"].startswith(harness.url)
    # Not listed, nor gettable, before registration.
    assert client.files.list_files(ORG).total == 0
    with pytest.raises(UnprocessableEntityError) as early:
        client.files.register_file(ORG, request={"files": [{"file_id": chunked["file_id"]}]})
    assert "0 of its" in early.value.body["error"]["message"]

    # In chunks, as GCS's resumable protocol: 308 with Range until the last one.
    first = httpx.put(chunked["upload_url"], content=PNG[:10], headers={"Content-Range": f"bytes 0-9/{len(PNG)}"})
    assert first.status_code == 308 and first.headers["range"] == "bytes=0-9"
    status = httpx.put(chunked["upload_url"], headers={"Content-Range": f"bytes */{len(PNG)}"})
    assert status.status_code == 308 and status.json()["received_bytes"] == 10
    wrong = httpx.put(
        chunked["upload_url"], content=PNG[5:], headers={"Content-Range": f"bytes 5-{len(PNG) - 1}/{len(PNG)}"}
    )
    assert wrong.status_code == 422 and wrong.json()["error"]["code"] == "VALIDATION_ERROR"
    last = httpx.put(
        chunked["upload_url"], content=PNG[10:], headers={"Content-Range": f"bytes 10-{len(PNG) - 1}/{len(PNG)}"}
    )
    assert last.status_code == 200 and last.json()["complete"] is True
    # POST works too; too many bytes is a 413.
    over = httpx.post(whole["upload_url"], content=JSON + b" ")
    assert over.status_code == 413 and over.json()["error"]["code"] == "PAYLOAD_TOO_LARGE"
    assert httpx.post(whole["upload_url"], content=JSON).status_code == 200

    registered = client.files.register_file(
        ORG, request={"files": [{"file_id": chunked["file_id"]}, {"file_id": whole["file_id"]}]}
    )
    assert registered["total_uploaded"] == 2
    assert [f["mime_type"] for f in registered["files"]] == ["image/png", "application/json"]
    again = client.files.register_file(ORG, request={"files": [{"file_id": whole["file_id"]}]})
    assert again["files"] == registered["files"][1:]  # idempotent: a retry answers the same
    got = client.files.get_file(ORG, chunked["file_id"])
    assert got.file_size == len(PNG)
    assert httpx.get(client.files.get_file_content(ORG, got.id).download_url).content == PNG
    # The URL's token is for that file only, and for uploading only.
    tampered = httpx.put(whole["upload_url"].replace(whole["file_id"], chunked["file_id"]), content=b"x")
    envelope_body = tampered.json()["error"]
    assert tampered.status_code == 401 and envelope_body["code"] == "AUTHENTICATION_REQUIRED"


def test_another_keys_file_is_not_found(harness: Harness) -> None:
    mine = v5(harness).files.upload_file(ORG, files=[("secret.json", JSON)]).files[0]
    other = v5(harness, OTHER_KEY)
    assert other.files.list_files(ORG).total == 0
    for call in (other.files.get_file, other.files.get_file_content, other.files.delete_file):
        with pytest.raises(ApiError) as caught:
            call(ORG, mine.id)
        error = envelope(caught.value, 404, "RESOURCE_NOT_FOUND")
        assert "secret" not in error["message"]
    with harness.client(OTHER_KEY) as http:
        assert http.get(f"/v1/organizations/{ORG}/files/{mine.id}/download").status_code == 404
        with harness.client(KEY) as own:
            assert own.get(f"/v1/organizations/{ORG}/files/{mine.id}/download").content == JSON
        registered = http.post(f"/v1/organizations/{ORG}/files", json={"files": [{"file_id": mine.id}]})
        assert registered.status_code == 404
    assert on_disk(harness) == [mine.id]


def test_file_over_the_size_limit_is_413(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(make_config(files={"max_file_bytes": 20}))
    client = v5(harness)
    with pytest.raises(ApiError) as caught:
        client.files.upload_file(ORG, files=[("ok.json", JSON), ("big.bin", b"x" * 21)])
    error = envelope(caught.value, 413, "PAYLOAD_TOO_LARGE")
    assert "big.bin" in error["message"] and error["details"]["max_file_bytes"] == 20
    assert client.files.list_files(ORG).total == 0 and on_disk(harness) == []  # all or none
    with pytest.raises(ApiError) as declared:
        client.files.generate_upload_url(ORG, request={"files": [{"filename": "big.bin", "file_size": 21}]})
    envelope(declared.value, 413, "PAYLOAD_TOO_LARGE")


def test_request_over_the_body_limit_and_key_quota_are_413(make_harness: Callable[..., Harness]) -> None:
    harness = make_harness(make_config(limits={"max_body_bytes": 2000}, files={"max_bytes_per_key": 30}))
    client = v5(harness)
    with pytest.raises(ApiError) as body:
        client.files.upload_file(ORG, files=[("big.bin", b"x" * 3000)])
    envelope(body.value, 413, "PAYLOAD_TOO_LARGE")
    client.files.upload_file(ORG, files=[("a.json", JSON)])
    with pytest.raises(ApiError) as quota:
        client.files.upload_file(ORG, files=[("b.json", JSON + JSON)])
    assert envelope(quota.value, 413, "PAYLOAD_TOO_LARGE")["details"]["max_bytes_per_key"] == 30
    assert client.files.list_files(ORG).total == 1 and len(on_disk(harness)) == 1


def test_bad_fields_are_422(harness: Harness) -> None:
    client = v5(harness)
    with pytest.raises(UnprocessableEntityError):
        client.files.list_files(ORG, limit=0)
    with pytest.raises(UnprocessableEntityError) as missing:
        client.files.generate_upload_url(ORG, request={"files": [{"file_size": 3}]})
    assert missing.value.body["error"]["details"]["errors"][0]["field"] == "files[0].filename"
    with pytest.raises(UnprocessableEntityError):
        client.files.register_file(ORG, request={"files": []})
    with harness.client() as http:
        url = f"/v1/organizations/{ORG}/files/upload"
        wrong_field = http.post(url, files={"file": ("a.txt", b"hi")})
        assert wrong_field.status_code == 422 and "`files`" in wrong_field.json()["error"]["message"]
        assert http.post(url, json={"files": []}).status_code == 422
        many = http.post(url, files=[("files", (f"{i}.txt", b"x")) for i in range(11)])
        assert many.status_code == 422 and "at most 10" in many.json()["error"]["message"]
        half = http.get(f"/v1/organizations/{ORG}/files/file_x/download", params={"token": "abc"})
        assert half.status_code == 422
    assert on_disk(harness) == []


def test_names_and_claims_are_not_trusted(harness: Harness) -> None:
    client = v5(harness)
    uploaded = client.files.upload_file(
        ORG, files=[("../../escape.png", b"not an image", "image/png"), ("C:\\x\\notes.txt", b"hi")]
    ).files
    assert [f.original_filename for f in uploaded] == ["escape.png", "notes.txt"]
    assert [f.mime_type for f in uploaded] == ["application/octet-stream", "text/plain"]
    assert sorted(on_disk(harness)) == sorted(f.id for f in uploaded)
    assert not (store_of(harness).directory.parent / "escape.png").exists()


def test_download_links_expire_and_are_bound_to_their_file(harness: Harness) -> None:
    client = v5(harness)
    a, b = client.files.upload_file(ORG, files=[("a.json", JSON), ("b.json", b"{}")]).files
    link = httpx.URL(client.files.get_file_content(ORG, a.id).download_url)
    swapped = httpx.get(str(link).replace(a.id, b.id))
    assert swapped.status_code == 401 and swapped.json()["error"]["code"] == "AUTHENTICATION_REQUIRED"
    store = store_of(harness)
    expired = httpx.get(str(link.copy_with(params={"token": store.sign("get", a.id, 1), "expires": 1})))
    assert expired.status_code == 401 and "expired" in expired.json()["error"]["message"]
    with pytest.raises(ApiError) as caught:
        client.files.download_file_content(ORG, a.id, token="0" * 64, expires=int(link.params["expires"]))
    envelope(caught.value, 401, "AUTHENTICATION_REQUIRED")
    (store.directory / b.id).unlink()  # bytes removed behind the proxy's back: a 404, not a 500
    gone = httpx.get(client.files.get_file_content(ORG, b.id).download_url)
    assert gone.status_code == 404 and "gone" in gone.json()["error"]["message"]


def test_deleting_an_owners_files_removes_their_bytes(harness: Harness, tmp_path: Path) -> None:
    client = v5(harness)
    client.files.upload_file(ORG, files=[("a.json", JSON), ("b.png", PNG)])
    pending = client.files.generate_upload_url(ORG, request={"files": [{"filename": "c", "file_size": 4}]})
    httpx.put(pending["files"][0]["upload_url"], content=b"ab", headers={"Content-Range": "bytes 0-1/4"})
    v5(harness, OTHER_KEY).files.upload_file(ORG, files=[("theirs.json", JSON)])
    assert len(on_disk(harness)) == 4  # three files and one part
    store = store_of(harness)
    assert harness.server.run_in_loop(_delete_owner(store)) == 3
    assert len(on_disk(harness)) == 1
    assert client.files.list_files(ORG).total == 0
    assert v5(harness, OTHER_KEY).files.list_files(ORG).total == 1


async def _delete_owner(store: FileStore) -> int:
    return store.delete_owner(owner())
