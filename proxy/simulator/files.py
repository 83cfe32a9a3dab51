"""The `files` namespace: uploaded files (images above all) and the handles predictions refer to."""

from __future__ import annotations

import base64
import binascii
import hashlib
import itertools
from dataclasses import dataclass
from typing import Any

# Magic numbers of the image formats LM Studio accepts (PNG, JPEG, GIF, WebP, BMP).
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a", b"BM")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".bmp")


class UploadError(ValueError):
    """An upload LM Studio would refuse (no name, content that is not base64)."""


@dataclass(frozen=True, slots=True)
class StoredFile:
    """One uploaded file: what a `file` part of a chat message names by identifier."""

    identifier: str
    name: str
    size_bytes: int
    file_type: str
    sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "identifier": self.identifier,
            "name": self.name,
            "sizeBytes": self.size_bytes,
            "fileType": self.file_type,
            "sha256": self.sha256,
        }


def file_type(name: str, data: bytes) -> str:
    """LM Studio's FileType for an upload, from its content first and its name second."""
    if data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return "image"
    lowered = name.lower()
    if lowered.endswith(_IMAGE_SUFFIXES):
        return "image"
    if lowered.endswith(".pdf") or data.startswith(b"%PDF"):
        return "application/pdf"
    if lowered.endswith((".doc", ".docx")):
        return "application/word"
    if lowered.endswith((".txt", ".md")):
        return "text/plain"
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return "unknown"
    return "text/other"


class FileStore:
    """Uploaded files by identifier (mutated only under the simulator's lock)."""

    def __init__(self) -> None:
        self._files: dict[str, StoredFile] = {}
        self._ids = itertools.count(1)

    def upload(self, parameter: Any) -> dict[str, Any]:
        """`uploadFileBase64`: store the file, return `{identifier, fileType, sizeBytes}`."""
        params = parameter if isinstance(parameter, dict) else {}
        name, content = params.get("name"), params.get("contentBase64")
        if not isinstance(name, str) or not name or not isinstance(content, str):
            raise UploadError("uploadFileBase64 needs a name and contentBase64")
        try:
            data = base64.b64decode(content, validate=True)
        except binascii.Error as exc:
            raise UploadError(f"contentBase64 is not base64: {exc}") from exc
        digest = hashlib.sha256(data).hexdigest()
        # Every upload gets a fresh identifier, even of the same bytes (as in LM Studio).
        stored = StoredFile(f"{next(self._ids)}-{digest[:12]}", name, len(data), file_type(name, data), digest)
        self._files[stored.identifier] = stored
        return {"identifier": stored.identifier, "fileType": stored.file_type, "sizeBytes": stored.size_bytes}

    def get(self, identifier: str) -> StoredFile | None:
        return self._files.get(identifier)

    def local_path(self, parameter: Any) -> str:
        identifier = parameter.get("fileIdentifier") if isinstance(parameter, dict) else None
        return f"/simulator/files/{identifier}"
