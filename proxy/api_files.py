"""HTTP endpoints for the v5 SDK's `files.*`: a local store of each key's files.

The organization in the path is taken as given and recorded (the proxy serves one
organization); files belong to the API key, as threads do. Another key's file is a 404.
"""

from __future__ import annotations

import re
import time
from typing import Any

from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response

from proxy.errors import AuthenticationRequired, InvalidRequest, ResourceNotFound, ValidationError
from proxy.files import FileStore, Incoming, files_of
from proxy.routing import Endpoints, Operation, OperationRoute
from proxy.state import proxy_of
from proxy.wire import files as wire
from proxy.wire.decode import decode_body, decode_query

api = Endpoints()
FILES = "/v1/organizations/{organization_id}/files"
_RANGE = re.compile(r"^bytes (?:(\d+)-(\d+)|\*)/(\d+|\*)$")


def _file_json(row: dict[str, Any]) -> wire.File:
    return {
        "id": row["id"],
        "original_filename": row["filename"],
        "file_size": row["size"],
        "mime_type": row["mime_type"],
        "storage_path": f"files/{row['id']}",
        "organization_id": row["organization_id"],
        "uploaded_by": None,
        "uploaded_by_api_key_id": None,
        "uploaded_at": row["created_at"],
        "sha256": row["sha256"] or "",
    }


def _owned(request: Request, owner: str) -> dict[str, Any]:
    file_id = request.path_params["file_id"]
    row = files_of(request).get(owner, file_id)
    if row is None:  # unknown or another key's: the same answer, never a leak
        raise ResourceNotFound(f"File {file_id} not found")
    return row


def _url(request: Request, path: str, **query: Any) -> str:
    return str(request.base_url).rstrip("/") + path + "?" + "&".join(f"{k}={v}" for k, v in query.items())


async def _form(request: Request, limit: int) -> FormData:
    try:
        return await request.form(max_files=limit + 1, max_fields=100)
    except HTTPException as exc:  # python-multipart's complaint, which Starlette makes a 400
        raise InvalidRequest(f"The multipart body is malformed: {exc.detail}") from None


def _uploads(form: FormData, limit: int) -> list[Incoming]:
    uploads: list[Incoming] = []
    for name, value in form.multi_items():
        if not isinstance(value, UploadFile):
            continue  # a plain form field: unknown fields are ignored, as in JSON bodies
        if name != "files":
            raise ValidationError(
                f"Invalid request: send files in the multipart field `files` (got one in `{name}`)",
                {"errors": [{"field": name, "message": "files go in the field `files`"}]},
            )
        uploads.append(Incoming(value.filename or "", value.content_type, value.file))
    if not uploads:
        raise ValidationError(
            "Invalid request: files: at least one file is required (multipart/form-data, field `files`)",
            {"errors": [{"field": "files", "message": "at least one file is required"}]},
        )
    if len(uploads) > limit:
        raise ValidationError(
            f"Invalid request: files: at most {limit} files in one upload (files.max_files_per_upload)",
            {"errors": [{"field": "files", "message": f"at most {limit} files"}]},
        )
    return uploads


@api.post(
    FILES + "/upload",
    Operation(
        "uploadFiles", "Upload files (multipart/form-data, field `files`)", "files", response=wire.FileBatch,
        status=201, errors=(400, 413, 422), response_description="The stored files",
        description="A `multipart/form-data` body with one or more parts named `files`. All are stored or none. "
        "Over `files.max_file_bytes` (or the request over `limits.max_body_bytes`): 413.",
    ),
)  # fmt: skip
async def upload_files(request: Request) -> Response:
    owner = proxy_of(request).auth.owner(request)
    store = files_of(request)
    form = await _form(request, store.config.max_files_per_upload)
    try:
        uploads = _uploads(form, store.config.max_files_per_upload)
        rows = await store.save(owner, request.path_params["organization_id"], uploads)
    finally:
        await form.close()  # the spooled temporary files
    body: wire.FileBatch = {
        "success": True,
        "message": f"Uploaded {len(rows)} file(s)",
        "files": [_file_json(r) for r in rows],
        "total_uploaded": len(rows),
        "total_failed": 0,
        "errors": [],
    }
    return JSONResponse(body, status_code=201)


@api.get(
    FILES,
    Operation(
        "listFiles", "List the caller's files, newest first", "files", response=wire.FileList,
        query=wire.FileListQuery, errors=(422,), response_description="A page of files",
    ),
)  # fmt: skip
async def list_files(request: Request) -> Response:
    owner = proxy_of(request).auth.owner(request)
    q = decode_query(wire.FileListQuery, request.query_params)
    rows, total = files_of(request).store.list_files(owner, offset=(q.page - 1) * q.limit, limit=q.limit)
    body: wire.FileList = {
        "files": [_file_json(r) for r in rows],
        "total": total,
        "page": q.page,
        "limit": q.limit,
        "has_more": q.page * q.limit < total,
    }
    return JSONResponse(body)


@api.get(FILES + "/{file_id}", Operation("getFile", "Get a file's metadata", "files", wire.File, errors=(404,)))
async def get_file(request: Request) -> Response:
    owner = proxy_of(request).auth.owner(request)
    return JSONResponse(_file_json(_owned(request, owner)))


@api.delete(
    FILES + "/{file_id}",
    Operation("deleteFile", "Delete a file and its bytes", "files", status=204, errors=(404,)),
)
async def delete_file(request: Request) -> Response:
    owner = proxy_of(request).auth.owner(request)
    row = _owned(request, owner)
    files_of(request).delete(owner, row["id"])
    return Response(status_code=204)


@api.get(
    FILES + "/{file_id}/content",
    Operation(
        "getFileContent", "A download URL for a file", "files", response=wire.FileContent, errors=(404,),
        description="`download_url` works without an API key for `files.download_url_seconds`.",
    ),
)  # fmt: skip
async def get_file_content(request: Request) -> Response:
    owner = proxy_of(request).auth.owner(request)
    row = _owned(request, owner)
    store = files_of(request)
    expires = int(time.time()) + store.config.download_url_seconds
    path = f"/v1/organizations/{row['organization_id']}/files/{row['id']}/download"
    body: wire.FileContent = {
        "file_id": row["id"],
        "filename": row["filename"],
        "mime_type": row["mime_type"],
        "file_size": row["size"],
        "download_url": _url(request, path, token=store.sign("get", row["id"], expires), expires=expires),
        "expires": expires,
    }
    return JSONResponse(body)


def _check_token(store: FileStore, action: str, file_id: str, token: str, expires: int) -> None:
    if not store.verify(action, file_id, expires, token):
        raise AuthenticationRequired("The link's token is not valid for this file.")
    if expires < time.time():
        raise AuthenticationRequired("The link has expired: ask for a new one.")


@api.get(
    FILES + "/{file_id}/download",
    Operation(
        "downloadFile", "A file's bytes", "files", media="application/octet-stream", query=wire.DownloadQuery,
        errors=(404, 422), response_description="The bytes, with the file's mime type",
        description="With `token` and `expires` from `download_url`, no API key is needed; without them, the "
        "owner's key is. Served as an attachment (`nosniff`, a sandboxing CSP).",
    ),
)  # fmt: skip
async def download_file(request: Request) -> Response:
    store = files_of(request)
    q = decode_query(wire.DownloadQuery, request.query_params)
    file_id = request.path_params["file_id"]
    if q.token is None and q.expires is None:
        row = _owned(request, proxy_of(request).auth.owner(request))
    else:
        if q.token is None or q.expires is None:
            raise ValidationError(
                "Invalid query parameters: token and expires come together (from download_url)",
                {"errors": [{"field": "token" if q.token is None else "expires", "message": "Field required"}]},
            )
        _check_token(store, "get", file_id, q.token, q.expires)
        found = store.store.get_file(None, file_id)
        if found is None:
            raise ResourceNotFound(f"File {file_id} not found")
        row = found
    path = store.disk_path(row["id"])
    if not path.is_file():  # removed behind the proxy's back: say so, not a 500
        raise ResourceNotFound(f"The bytes of file {row['id']} are gone from the proxy's files folder")
    return FileResponse(
        path,
        media_type=row["mime_type"],
        filename=row["filename"],
        content_disposition_type="attachment",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox"},
    )


@api.post(
    FILES + "/upload-url",
    Operation(
        "generateUploadUrl", "Upload URLs for files whose bytes come later", "files", response=wire.UploadUrls,
        body=wire.UploadUrlRequest, status=201, errors=(400, 413, 422),
        description="Each declared file gets an `upload_url` on this proxy that takes its bytes (whole, or in "
        "chunks each within `limits.max_body_bytes`) without an API key; then `register_file` makes them files.",
    ),
)  # fmt: skip
async def generate_upload_url(request: Request) -> Response:
    owner = proxy_of(request).auth.owner(request)
    req = decode_body(wire.UploadUrlRequest, await request.body())
    store = files_of(request)
    org = request.path_params["organization_id"]
    rows = store.reserve(owner, org, [(f.filename, f.file_size, f.mime_type) for f in req.files])
    urls: list[wire.UploadUrl] = []
    for row in rows:
        path = f"/v1/organizations/{org}/files/{row['id']}/upload"
        urls.append({
            "file_id": row["id"], "filename": row["filename"], "file_size": row["size"], "mime_type": row["mime_type"],
            "upload_url": _url(request, path, token=store.sign("put", row["id"], row["expires_at"]),
                               expires=row["expires_at"]),
            "method": "PUT", "expires": row["expires_at"],
        })  # fmt: skip
    body: wire.UploadUrls = {
        "success": True, "message": f"{len(urls)} upload URL(s)", "files": urls, "total": len(urls),
    }  # fmt: skip
    return JSONResponse(body, status_code=201)


async def upload_bytes(request: Request) -> Response:
    """PUT/POST to an upload URL: the whole body, or a chunk named by Content-Range."""
    store = files_of(request)
    q = decode_query(wire.UploadQuery, request.query_params)
    file_id = request.path_params["file_id"]
    _check_token(store, "put", file_id, q.token, q.expires)
    row = store.store.get_file(None, file_id, None)
    if row is None:
        raise ResourceNotFound(f"Upload {file_id} not found (expired, or already deleted)")
    have = store.received(row)
    content_range = request.headers.get("content-range")
    data = await request.body()
    start, writes = 0, True
    if content_range is not None:
        m = _RANGE.match(content_range.strip())
        if m is None or (m[3] != "*" and int(m[3]) != row["size"]):
            raise ValidationError(
                f"Invalid request: Content-Range must be 'bytes START-END/{row['size']}' or 'bytes */{row['size']}'",
                {"errors": [{"field": "Content-Range", "message": "not a byte range of this upload"}]},
            )
        writes = m[1] is not None  # `bytes */TOTAL`: only asks how far the upload got
        if writes:
            start, end = int(m[1]), int(m[2])
            if end - start + 1 != len(data) or start != have:
                raise ValidationError(
                    f"Invalid request: the chunk must start at byte {have} and be END-START+1 bytes long",
                    {"errors": [{"field": "Content-Range", "message": f"the upload has {have} bytes so far"}]},
                )
    if row["status"] == "pending" and writes:
        row = await store.write(row, start, data)
        have = store.received(row)
    complete = row["status"] != "pending"
    body: wire.UploadProgress = {
        "file_id": row["id"], "received_bytes": have, "file_size": row["size"], "complete": complete,
    }  # fmt: skip
    if complete:
        return JSONResponse(body)
    headers = {"Range": f"bytes=0-{have - 1}"} if have else {}
    return JSONResponse(body, status_code=308, headers=headers)


_UPLOAD_OPERATION = dict(
    tag="files", response=wire.UploadProgress, query=wire.UploadQuery, errors=(401, 404, 413, 422),
    response_description="All the bytes arrived (308 with a `Range` header: not yet)",
    description="The raw bytes as the body: no API key, the URL's token authorizes. In chunks: "
    "`Content-Range: bytes START-END/TOTAL`; `bytes */TOTAL` with no body asks how far it got.",
)  # fmt: skip
for _method, _id in (("PUT", "uploadFileBytes"), ("POST", "uploadFileBytesByPost")):
    api.routes.append(
        OperationRoute(
            FILES + "/{file_id}/upload",
            upload_bytes,
            _method,
            Operation(_id, "Send the bytes of a file to its upload URL", public=True, **_UPLOAD_OPERATION),  # type: ignore[arg-type]
        )
    )


@api.post(
    FILES,
    Operation(
        "registerFiles", "Make uploaded bytes files", "files", response=wire.FileBatch, body=wire.RegisterRequest,
        errors=(400, 404, 413, 422), response_description="The registered files",
        description="Files whose bytes have all arrived at their upload URLs become files (all or none). "
        "Registering a file again answers it again.",
    ),
)  # fmt: skip
async def register_files(request: Request) -> Response:
    owner = proxy_of(request).auth.owner(request)
    req = decode_body(wire.RegisterRequest, await request.body())
    store = files_of(request)
    rows = []
    for item in req.files:
        row = store.store.get_file(owner, item.file_id, None)
        if row is None:
            raise ResourceNotFound(f"File {item.file_id} not found (no upload URL for it, or it expired)")
        if row["status"] == "pending":
            received = store.received(row)
            raise ValidationError(
                f"Invalid request: file {row['id']} has {received} of its {row['size']} bytes: send the rest "
                "to its upload_url first",
                {"errors": [{"field": "files", "message": f"{row['id']}: upload incomplete"}]},
            )
        rows.append(row)
    for row in rows:
        if row["status"] != "ready":
            store.register(row)
    ready = [r for r in (store.get(owner, row["id"]) for row in rows) if r]
    body: wire.FileBatch = {
        "success": True,
        "message": f"Registered {len(ready)} file(s)",
        "files": [_file_json(r) for r in ready],
        "total_uploaded": len(ready),
        "total_failed": 0,
        "errors": [],
    }
    return JSONResponse(body)


routes = api.routes
