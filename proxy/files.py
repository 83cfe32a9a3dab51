"""The file store: uploaded files' bytes on disk, named by id; their metadata in the store.

Design decisions (read before changing):
- A file's bytes live at `<directory>/<id>`, where the id is the proxy's own (`file_` + hex).
  The client's filename is metadata only: no name a client sends can reach outside the folder.
- Bytes are written to `<id>.part` and renamed when whole, so a file under its id is complete.
- Deleting removes the row first, then the bytes: a crash in between leaves unreferenced
  bytes, never a row whose bytes are gone.
- `mime_type` of the images LM Studio can take (PNG, JPEG, GIF, WebP) comes from the bytes'
  signature, never from the client alone: a file only claiming to be an image is
  `application/octet-stream`, and an image sent as anything is its image type.
- Download and upload URLs carry an HMAC-SHA256 token of (action, file id, expiry) under a
  key kept in the database: they work without an API key (as v5's signed URLs do), survive
  restarts, and are shared by every proxy serving the same database.
- Writing and hashing run in a worker thread: a 20 MB upload must not stall the streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import mimetypes
import os
import re
import shutil
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import platformdirs
from starlette.requests import Request

from proxy.config import FilesConfig
from proxy.engines import is_url
from proxy.errors import PayloadTooLarge
from proxy.store import Store, new_id

IMAGE_TYPES = ("image/png", "image/jpeg", "image/gif", "image/webp")
OCTET_STREAM = "application/octet-stream"
CHUNK = 1 << 16
_MIME = re.compile(r"^[a-z0-9][a-z0-9!#$&^_.+-]{0,63}/[a-z0-9][a-z0-9!#$&^_.+-]{0,126}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def sniff(head: bytes) -> str | None:
    """The image type the first bytes of a file show (PNG, JPEG, GIF, WebP), else None."""
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "image/gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    return None


def mime_type_of(head: bytes, declared: str | None, filename: str) -> str:
    """The bytes' image type if they are one; else the client's type (or the name's), but never
    an image type the bytes do not show."""
    sniffed = sniff(head)
    if sniffed:
        return sniffed
    claimed = (declared or "").split(";")[0].strip().lower()
    if not _MIME.match(claimed) or claimed == OCTET_STREAM:
        claimed = (mimetypes.guess_type(filename)[0] or OCTET_STREAM).lower()
    return OCTET_STREAM if claimed in IMAGE_TYPES else claimed


def is_image(file: dict[str, Any]) -> bool:
    """Whether a file (a row from `FileStore.get`) is an image LM Studio can be sent."""
    return file["mime_type"] in IMAGE_TYPES


def clean_name(name: str | None) -> str:
    """A filename to show: the last path component, no control characters, at most 255 characters."""
    base = re.split(r"[/\\]", name or "")[-1]
    return _CONTROL.sub("", base)[:255] or "upload"


@dataclass(frozen=True)
class Incoming:
    """One uploaded file as the form parser spooled it."""

    filename: str
    content_type: str | None
    file: IO[bytes]


def _copy(source: IO[bytes], target: Path, limit: int) -> tuple[int, str, bytes]:
    """Copy `source` to `target` (at most `limit` bytes); return (size, sha256, first bytes)."""
    digest, size, head = hashlib.sha256(), 0, b""
    source.seek(0)
    with open(target, "wb") as out:
        while chunk := source.read(CHUNK):
            size += len(chunk)
            if size > limit:
                raise OverflowError
            if len(head) < 16:
                head += chunk[:16]
            digest.update(chunk)
            out.write(chunk)
    return size, digest.hexdigest(), head[:16]


def _digest(path: Path) -> tuple[str, bytes]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(16)
        digest.update(head)
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest(), head


def _append(path: Path, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


class FileStore:
    """Each key's files: bytes under `directory`, rows in the store. What the create path uses:
    `get(owner, id)`, `await read(owner, id)` (or `path`, `read_bytes`) and `is_image(row)`."""

    def __init__(self, store: Store, config: FilesConfig, directory: Path | None) -> None:
        self.store = store
        self.config = config
        self._directory = directory  # None: a temporary folder, made on first use (a `:memory:` database)
        self._made = False

    @property
    def directory(self) -> Path:
        if self._directory is None:
            self._directory = Path(tempfile.mkdtemp(prefix="lmstudio-proxy-files-"))
            weakref.finalize(self, shutil.rmtree, self._directory, True)
        if not self._made:  # once: not a system call for every path
            self._directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._made = True
        return self._directory

    def disk_path(self, file_id: str, part: bool = False) -> Path:
        """Where a file's bytes are (`part`: while they arrive); `file_id` must be one of the proxy's ids."""
        if not re.fullmatch(r"file_[0-9a-f]{24}", file_id):  # ids are the proxy's own; never a path
            raise ValueError(f"not a file id: {file_id!r}")
        return self.directory / (file_id + (".part" if part else ""))

    # -- reading: the internal API -------------------------------------------------------

    def get(self, owner: str, file_id: str) -> dict[str, Any] | None:
        """A ready file's metadata if it is the owner's: id, filename, mime_type, size, sha256, …"""
        return self.store.get_file(owner, file_id)

    def path(self, owner: str, file_id: str) -> Path | None:
        """Where a ready file of the owner's bytes are, or None (unknown, another key's, not ready)."""
        return self.disk_path(file_id) if self.get(owner, file_id) else None

    def read_bytes(self, owner: str, file_id: str) -> bytes | None:
        """A ready file's bytes if it is the owner's (read whole: for images sent to LM Studio)."""
        path = self.path(owner, file_id)
        return path.read_bytes() if path else None

    async def read(self, owner: str, file_id: str) -> bytes | None:
        """`read_bytes` in a worker thread: what a request handler should call."""
        path = self.path(owner, file_id)
        return await asyncio.to_thread(path.read_bytes) if path else None

    # -- writing -------------------------------------------------------------------------

    def _check_quota(self, owner: str, adding: int) -> None:
        quota = self.config.max_bytes_per_key
        used = self.store.file_bytes(owner)
        if quota and used + adding > quota:
            raise PayloadTooLarge(
                f"This key's files would take {used + adding} bytes, over files.max_bytes_per_key ({quota}): "
                "delete some files first.",
                {"used_bytes": used, "adding_bytes": adding, "max_bytes_per_key": quota},
            )

    def _check_size(self, filename: str, size: int) -> None:
        limit = self.config.max_file_bytes
        if size > limit:
            raise PayloadTooLarge(
                f"File {filename!r} is larger than files.max_file_bytes ({limit} bytes).",
                {"filename": filename, "max_file_bytes": limit},
            )

    async def save(self, owner: str, organization_id: str, uploads: list[Incoming]) -> list[dict[str, Any]]:
        """Store uploaded files, all or none (an error leaves no file behind); return their rows."""
        written: list[Path] = []
        rows: list[dict[str, Any]] = []
        try:
            for upload in uploads:
                name = clean_name(upload.filename)
                file_id = new_id("file")
                part = self.disk_path(file_id, part=True)
                written.append(part)
                try:
                    size, sha, head = await asyncio.to_thread(_copy, upload.file, part, self.config.max_file_bytes)
                except OverflowError:
                    self._check_size(name, self.config.max_file_bytes + 1)
                    raise
                mime = mime_type_of(head, upload.content_type, name)
                rows.append({"id": file_id, "filename": name, "mime_type": mime, "size": size, "sha256": sha})
            self._check_quota(owner, sum(r["size"] for r in rows))
            for row in rows:
                final = self.disk_path(row["id"])
                os.replace(self.disk_path(row["id"], part=True), final)
                written.append(final)
            self.store.add_files(owner, organization_id, rows, "ready")
        except BaseException:
            for path in written:
                path.unlink(missing_ok=True)
            raise
        return [r for r in (self.store.get_file(owner, row["id"]) for row in rows) if r]

    def reserve(
        self, owner: str, organization_id: str, declared: list[tuple[str, int, str | None]]
    ) -> list[dict[str, Any]]:
        """Upload URLs: pending rows for (filename, size, mime type) whose bytes come later."""
        for filename, size, _ in declared:
            self._check_size(clean_name(filename), size)
        self.expire_uploads(owner)
        rows: list[dict[str, Any]] = []
        for filename, size, mime in declared:
            name = clean_name(filename)
            rows.append({
                "id": new_id("file"), "filename": name, "size": size,
                "mime_type": mime_type_of(b"", mime, name),
                "expires_at": int(time.time()) + self.config.upload_url_seconds,
            })  # fmt: skip
        self._check_quota(owner, sum(r["size"] for r in rows))
        self.store.add_files(owner, organization_id, rows, "pending")
        return rows

    def received(self, file: dict[str, Any]) -> int:
        """How many bytes of a pending upload have arrived."""
        if file["status"] != "pending":
            return int(file["size"])
        with contextlib.suppress(FileNotFoundError):
            return self.disk_path(file["id"], part=True).stat().st_size
        return 0

    async def write(self, file: dict[str, Any], start: int, data: bytes) -> dict[str, Any]:
        """Add a chunk to a pending upload at `start` (which must be where it ends); complete it when whole."""
        if start == 0:
            self.disk_path(file["id"], part=True).unlink(missing_ok=True)
        if start + len(data) > file["size"]:
            raise PayloadTooLarge(
                f"The upload is larger than its declared file_size ({file['size']} bytes).",
                {"file_size": file["size"]},
            )
        part = self.disk_path(file["id"], part=True)
        await asyncio.to_thread(_append, part, data)
        if start + len(data) == file["size"]:
            sha, head = await asyncio.to_thread(_digest, part)
            os.replace(part, self.disk_path(file["id"]))
            mime = mime_type_of(head, file["mime_type"], file["filename"])
            self.store.update_file(file["id"], sha256=sha, mime_type=mime, status="uploaded")
        updated = self.store.get_file(None, file["id"], None)
        assert updated is not None
        return updated

    def register(self, file: dict[str, Any]) -> None:
        self.store.update_file(file["id"], status="ready", expires_at=None)

    def expire_uploads(self, owner: str) -> None:
        """Forget the owner's upload URLs that expired before their bytes were registered."""
        ids = self.store.expired_uploads(owner, int(time.time()))
        if ids:
            self._unlink(self.store.delete_files(owner, ids))

    # -- deleting ------------------------------------------------------------------------

    def _unlink(self, file_ids: list[str]) -> None:
        for file_id in file_ids:
            self.disk_path(file_id).unlink(missing_ok=True)
            self.disk_path(file_id, part=True).unlink(missing_ok=True)

    def delete(self, owner: str, file_id: str) -> bool:
        """Delete one of the owner's files (row, then bytes); False if there was none."""
        deleted = self.store.delete_files(owner, [file_id])
        self._unlink(deleted)
        return bool(deleted)

    def delete_owner(self, owner: str) -> int:
        """Delete every file of the owner, pending uploads included (for "delete all my data")."""
        deleted = self.store.delete_files(owner)
        self._unlink(deleted)
        return len(deleted)

    # -- signed URLs ---------------------------------------------------------------------

    def sign(self, action: str, file_id: str, expires: int) -> str:
        key = self.store.setting("files.signing_key").encode()
        message = f"{action}:{file_id}:{expires}".encode("utf-8", "surrogatepass")
        return hmac.new(key, message, hashlib.sha256).hexdigest()

    def verify(self, action: str, file_id: str, expires: int, token: str) -> bool:
        # compare_digest takes ASCII strings only; a token is hex, so anything else is simply wrong.
        return token.isascii() and hmac.compare_digest(self.sign(action, file_id, expires), token)


def files_directory(configured: str, database: str | Path) -> Path | None:
    """`files.directory`, else `<database>-files` beside the database (PostgreSQL: `files` in the
    user's data directory); None for `:memory:`."""
    if configured:
        return Path(configured).expanduser()
    if is_url(str(database)):
        return Path(platformdirs.user_data_dir("lmstudio-proxy")) / "files"
    return None if str(database) == ":memory:" else Path(f"{database}-files")


def files_of(request: Request) -> FileStore:
    """The file store serving this request (built by the app factory, as `state.proxy_of`)."""
    files: FileStore = request.app.state.files
    return files
