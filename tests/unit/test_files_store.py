"""The file store on a temp database and folder: sniffing, names, limits, signing, deleting."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from proxy.config import FilesConfig
from proxy.errors import PayloadTooLarge
from proxy.files import FileStore, Incoming, clean_name, files_directory, is_image, mime_type_of, sniff
from proxy.state import default_database_path
from proxy.store import Store

PNG = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
JPEG = b"\xff\xd8\xff\xe0" + b"\0" * 16
GIF = b"GIF89a" + b"\0" * 16
WEBP = b"RIFF\x10\0\0\0WEBPVP8 " + b"\0" * 8


@pytest.fixture
def files(store: Store, tmp_path: Path) -> FileStore:
    return FileStore(store, FilesConfig(max_file_bytes=100, max_bytes_per_key=150), tmp_path / "files")


def incoming(name: str, data: bytes, content_type: str | None = None) -> Incoming:
    return Incoming(name, content_type, io.BytesIO(data))


@pytest.mark.parametrize(
    ("data", "expected"),
    [(PNG, "image/png"), (JPEG, "image/jpeg"), (GIF, "image/gif"), (WEBP, "image/webp"), (b"RIFF\0\0\0\0WAVE", None),
     (b"hello", None), (b"", None)],
)  # fmt: skip
def test_sniff_knows_the_images_lm_studio_takes(data: bytes, expected: str | None) -> None:
    assert sniff(data[:16]) == expected


@pytest.mark.parametrize(
    ("head", "declared", "name", "expected"),
    [
        (PNG, "text/plain", "a.txt", "image/png"),  # the bytes win
        (JPEG, None, "a.png", "image/jpeg"),
        (b"text", "image/png", "a.png", "application/octet-stream"),  # a claim the bytes do not back
        (b"text", None, "a.webp", "application/octet-stream"),  # nor does the name
        (b"text", "text/markdown; charset=utf-8", "a", "text/markdown"),
        (b"%PDF-1.7", "application/octet-stream", "doc.pdf", "application/pdf"),
        (b"x", "not a type", "notes.txt", "text/plain"),
        (b"x", None, "noext", "application/octet-stream"),
        (b"<svg", "IMAGE/SVG+XML", "a.svg", "image/svg+xml"),  # not one LM Studio takes: kept as said
    ],
)
def test_mime_type_trusts_bytes_before_the_client(head: bytes, declared: str | None, name: str, expected: str) -> None:
    assert mime_type_of(head, declared, name) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [("../../etc/passwd", "passwd"), ("C:\\fakepath\\a.png", "a.png"), ("a\x00b\nc.txt", "abc.txt"), ("", "upload"),
     (None, "upload"), ("dir/", "upload"), ("x" * 300, "x" * 255)],
)  # fmt: skip
def test_clean_name_keeps_only_a_base_name(name: str | None, expected: str) -> None:
    assert clean_name(name) == expected


def test_files_directory() -> None:
    assert files_directory("", "/data/proxy.sqlite3") == Path("/data/proxy.sqlite3-files")
    assert files_directory("/srv/files", "/data/proxy.sqlite3") == Path("/srv/files")
    assert files_directory("", ":memory:") is None
    # A PostgreSQL URL is no folder: the user's data directory, unless files.directory says otherwise.
    in_data_dir = files_directory("", "postgresql://u:pw@db.lan/proxy")
    assert in_data_dir is not None and in_data_dir.name == "files" and "postgresql:" not in str(in_data_dir)
    assert in_data_dir.parent == default_database_path().parent
    assert files_directory("/srv/files", "postgresql://db.lan/proxy") == Path("/srv/files")


async def test_save_get_read_and_delete(files: FileStore) -> None:
    rows = await files.save("owner-a", "org_x", [incoming("a.png", PNG, "image/png"), incoming("b.txt", b"hi")])
    assert [(r["filename"], r["mime_type"], r["size"], r["organization_id"]) for r in rows] == [
        ("a.png", "image/png", len(PNG), "org_x"), ("b.txt", "text/plain", 2, "org_x"),
    ]  # fmt: skip
    image = rows[0]
    assert files.get("owner-a", image["id"]) == image and is_image(image) and not is_image(rows[1])
    assert files.read_bytes("owner-a", image["id"]) == PNG
    assert await files.read("owner-a", image["id"]) == PNG
    assert await files.read("owner-b", image["id"]) is None
    assert files.path("owner-a", image["id"]) == files.directory / image["id"]
    assert files.get("owner-b", image["id"]) is None and files.read_bytes("owner-b", image["id"]) is None
    assert files.delete("owner-b", image["id"]) is False
    assert files.delete("owner-a", image["id"]) is True
    assert not (files.directory / image["id"]).exists()
    assert files.get("owner-a", image["id"]) is None
    assert sorted(p.name for p in files.directory.iterdir()) == [rows[1]["id"]]


async def test_a_file_over_the_limit_stores_nothing(files: FileStore) -> None:
    with pytest.raises(PayloadTooLarge) as caught:
        await files.save("owner-a", "org", [incoming("ok.txt", b"x"), incoming("big.bin", b"x" * 101)])
    assert "big.bin" in caught.value.message
    assert list(files.directory.iterdir()) == []
    assert files.store.list_files("owner-a", offset=0, limit=10) == ([], 0)


async def test_the_key_quota_counts_stored_and_reserved_bytes(files: FileStore) -> None:
    await files.save("owner-a", "org", [incoming("a.bin", b"x" * 100)])
    files.reserve("owner-a", "org", [("b.bin", 40, None)])
    with pytest.raises(PayloadTooLarge) as caught:
        await files.save("owner-a", "org", [incoming("c.bin", b"x" * 20)])
    assert caught.value.details["used_bytes"] == 140
    assert len(list(files.directory.iterdir())) == 1
    await files.save("owner-b", "org", [incoming("c.bin", b"x" * 20)])  # another key's quota is its own


async def test_chunked_upload_completes_and_sniffs(files: FileStore) -> None:
    (pending,) = files.reserve("owner-a", "org", [("pic", len(PNG), "text/plain")])
    row = files.store.get_file("owner-a", pending["id"], None)
    assert row is not None and row["status"] == "pending" and files.received(row) == 0
    row = await files.write(row, 0, PNG[:5])
    assert row["status"] == "pending" and files.received(row) == 5
    with pytest.raises(PayloadTooLarge):
        await files.write(row, 5, PNG[5:] + b"!")
    row = await files.write(row, 5, PNG[5:])
    assert (row["status"], row["mime_type"]) == ("uploaded", "image/png")
    assert files.get("owner-a", row["id"]) is None  # not a file until registered
    files.register(row)
    assert files.read_bytes("owner-a", row["id"]) == PNG


def test_expired_upload_urls_are_forgotten(files: FileStore) -> None:
    (pending,) = files.reserve("owner-a", "org", [("a", 4, None)])
    files.disk_path(pending["id"], part=True).write_bytes(b"ab")
    files.store.update_file(pending["id"], expires_at=1)
    files.expire_uploads("owner-a")
    assert files.store.get_file("owner-a", pending["id"], None) is None
    assert list(files.directory.iterdir()) == []


def test_tokens_bind_action_file_and_expiry(files: FileStore, tmp_path: Path) -> None:
    token = files.sign("get", "file_1", 100)
    assert files.verify("get", "file_1", 100, token)
    assert not files.verify("put", "file_1", 100, token)
    assert not files.verify("get", "file_2", 100, token)
    assert not files.verify("get", "file_1", 101, token)
    assert not files.verify("get", "file_1", 100, "é" * 64)  # found by the fuzzer: not ASCII is not a token
    assert not files.verify("get", "file_\ud800", 100, token)
    # The key is the database's: a second store on the same file signs alike.
    again = Store(files.store.path)
    try:
        assert FileStore(again, files.config, tmp_path).verify("get", "file_1", 100, token)
    finally:
        again.close()


def test_disk_paths_take_only_the_proxys_ids(files: FileStore) -> None:
    for bad in ("../x", "file_../../etc", "file_" + "0" * 23, "/etc/passwd"):
        with pytest.raises(ValueError):
            files.disk_path(bad)


async def test_delete_owner_removes_all_of_one_owners_files(files: FileStore) -> None:
    await files.save("owner-a", "org", [incoming("a", b"1"), incoming("b", b"2")])
    files.reserve("owner-a", "org", [("c", 3, None)])
    (theirs,) = await files.save("owner-b", "org", [incoming("z", b"9")])
    assert files.delete_owner("owner-a") == 3
    assert [p.name for p in files.directory.iterdir()] == [theirs["id"]]
    assert files.store.file_bytes("owner-a") == 0


def test_memory_database_gets_a_temporary_folder(store: Store) -> None:
    files = FileStore(store, FilesConfig(), None)
    directory = files.directory
    assert directory.is_dir() and directory.name.startswith("lmstudio-proxy-files-")
    del files
    assert not directory.exists()
