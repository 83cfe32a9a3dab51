"""The shapes of the files endpoints (v5 `files.*`): request models and response TypedDicts."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field
from typing_extensions import TypedDict

from proxy.wire.bodies import Timestamp

FileName = Annotated[str, Field(min_length=1, max_length=1000)]


class _Shape(BaseModel):
    model_config = ConfigDict(strict=True, allow_inf_nan=False, extra="ignore")


class FileListQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    page: int = Field(1, ge=1, le=1_000_000, description="1 is the newest files")
    limit: int = Field(20, ge=1, le=100)


class DownloadQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    token: str | None = Field(None, max_length=200, description="From `download_url`; absent: the API key is needed")
    expires: int | None = Field(None, description="From `download_url` (unix seconds)")


class UploadQuery(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    token: str = Field(max_length=200, description="From `upload_url`")
    expires: int = Field(description="From `upload_url` (unix seconds)")


class UploadUrlFile(_Shape):
    filename: FileName = Field(validation_alias=AliasChoices("filename", "file_name", "original_filename"))
    file_size: int = Field(ge=0, validation_alias=AliasChoices("file_size", "size"), description="Bytes")
    mime_type: str | None = Field(
        None, max_length=200, validation_alias=AliasChoices("mime_type", "content_type"),
        description="Checked against the bytes when they arrive",
    )  # fmt: skip


class UploadUrlRequest(_Shape):
    """`files.generate_upload_url(request=...)`."""

    files: list[UploadUrlFile] = Field(min_length=1, max_length=10)


class RegisterFile(_Shape):
    file_id: str = Field(min_length=1, max_length=200, validation_alias=AliasChoices("file_id", "id"))


class RegisterRequest(_Shape):
    """`files.register_file(request=...)`: the files whose bytes were sent to their upload URLs."""

    files: list[RegisterFile] = Field(min_length=1, max_length=10)


class File(TypedDict):
    """v5's `FileResponse` (plus `sha256`)."""

    id: Annotated[str, Field(description="file_…")]
    original_filename: str
    file_size: Annotated[int, Field(description="Bytes")]
    mime_type: Annotated[str, Field(description="Image types come from the bytes, never from the client alone")]
    storage_path: Annotated[str, Field(description="Relative to the proxy's files folder")]
    organization_id: str
    uploaded_by: None
    uploaded_by_api_key_id: None
    uploaded_at: Timestamp
    sha256: str


class FileBatch(TypedDict):
    """v5's `FileBatchUploadResponse`: an upload or a registration, all files or none."""

    success: bool
    message: str
    files: list[File]
    total_uploaded: int
    total_failed: int
    errors: list[dict[str, Any]]


class FileList(TypedDict):
    """v5's `FileListResponse`: the caller's files, newest first."""

    files: list[File]
    total: int
    page: int
    limit: int
    has_more: bool


class FileContent(TypedDict):
    """v5's `FileContentResponse`."""

    file_id: str
    filename: str
    mime_type: str
    file_size: int
    download_url: Annotated[str, Field(description="Works without an API key until `expires`")]
    expires: Annotated[int, Field(description="Unix seconds")]


class UploadUrl(TypedDict):
    file_id: str
    filename: str
    file_size: int
    mime_type: str
    upload_url: Annotated[
        str,
        Field(
            description="PUT (or POST) the bytes here, no API key needed: whole, or in chunks with "
            "`Content-Range: bytes START-END/TOTAL` (308 with `Range` until the last one)"
        ),
    ]
    method: Literal["PUT"]
    expires: Annotated[int, Field(description="Unix seconds")]


class UploadUrls(TypedDict):
    """`files.generate_upload_url`: one upload URL per declared file; then `files.register_file`."""

    success: bool
    message: str
    files: list[UploadUrl]
    total: int


class UploadProgress(TypedDict):
    """A chunk or a whole body sent to an upload URL."""

    file_id: str
    received_bytes: int
    file_size: int
    complete: bool
