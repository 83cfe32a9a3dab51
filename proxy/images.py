"""Images in a create request: found in the inputs, read, checked, and handed to LM Studio.

An image may come as a stored file (`files: [{file_id}]`, or a `file`/`image` block with a
`file_id`) or inline (a `data:image/…;base64,…` URL, or base64 `data`). Only images are sent,
and only to a model that has vision: anything else is a 422 that says why. The bytes go to LM
Studio through the SDK's file upload (`Bridge.prepare_image`), once per request.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

from proxy.errors import ResourceNotFound, ValidationError
from proxy.files import FileStore, sniff
from proxy.wire.requests import IMAGE_BLOCKS, NOT_SUPPORTED, ContentBlock, CreateResponseRequest


@dataclass(frozen=True)
class Image:
    """One image of one input message."""

    index: int  # of the input message
    data: bytes
    name: str
    mime_type: str
    file_id: str | None  # a stored file's id; None for an inline image


def _invalid(field: str, message: str) -> ValidationError:
    return ValidationError(f"Invalid request: {field}: {message}", {"errors": [{"field": field, "message": message}]})


def _inline(field: str, block: ContentBlock) -> bytes:
    raw: str | None = block.data
    if raw is None:
        url = block.image_url.get("url") if isinstance(block.image_url, dict) else block.image_url
        if not isinstance(url, str) or not url.startswith("data:") or ";base64," not in url:
            raise _invalid(field, f"{NOT_SUPPORTED}: image URLs other than data:…;base64,… (the proxy fetches nothing)")
        raw = url.split(";base64,", 1)[1]
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise _invalid(field, "is not valid base64") from None


async def collect(files: FileStore, owner: str, req: CreateResponseRequest) -> list[Image]:
    """Every image of the request's inputs, read and checked (404/422 before anything is stored)."""
    found: list[Image] = []

    async def stored(index: int, field: str, file_id: str) -> None:
        file = files.get(owner, file_id)
        data = await files.read(owner, file_id) if file is not None else None
        if file is None or data is None:
            raise ResourceNotFound(f"File {file_id} not found", {"field": field})
        mime = sniff(data[:16])
        if mime is None:
            raise _invalid(field, f"{NOT_SUPPORTED}: files that are not images ({file['mime_type']}) as inputs")
        found.append(Image(index, data, file["filename"], mime, file_id))

    for i, message in enumerate(req.inputs):
        for j, ref in enumerate(message.files or ()):
            await stored(i, f"inputs[{i}].files[{j}]", ref.file_id)
        if not isinstance(message.content, list):
            continue
        for j, block in enumerate(message.content):
            if not isinstance(block, ContentBlock) or block.type in (None, "text", "input_text"):
                continue
            field = f"inputs[{i}].content[{j}]"
            if block.file_id is not None:
                await stored(i, field, block.file_id)
            elif block.type in IMAGE_BLOCKS:
                data = _inline(field, block)
                mime = sniff(data[:16])
                if mime is None:
                    raise _invalid(field, "is not a PNG, JPEG, GIF or WebP image")
                found.append(Image(i, data, f"image-{i}-{j}.{mime.rsplit('/', 1)[1]}", mime, None))
    return found


def note(images: list[Image]) -> dict[str, Any]:
    """What the stored message keeps of its images (the bytes stay in the file store, or nowhere)."""
    return {"images": [{"name": im.name, "mime_type": im.mime_type, "file_id": im.file_id} for im in images]}
