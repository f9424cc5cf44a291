"""Blobs: content-addressed files. Operators upload (streamed); devices and operators
download, with HTTP Range so an interrupted download resumes where it stopped."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import BinaryIO, cast

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from edgefleet.artifacts.blob_files import FileRangeReader
from edgefleet.artifacts.blobstore import BlobReader, parse_range_header, validate_sha256
from edgefleet.core.device import Device
from edgefleet.errors import NotFound, PayloadTooLarge
from edgefleet.security.rbac import Permission
from edgefleet.server.auth import device_or_operator, requires
from edgefleet.server.composition import Services, services
from edgefleet.server.roles import served_by
from edgefleet.server.schemas.blobs import StoredBlobOut
from edgefleet.server.services.audit import OperatorContext
from edgefleet.server.services.deltas import DeltaState

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])

SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024
DELTA_RETRY_AFTER_S = 2


@router.put("/{sha256}", status_code=201, summary="Upload a blob (the body is the file)")
async def upload_blob(
    sha256: str,
    request: Request,
    ctx: OperatorContext = Depends(requires(Permission.ARTIFACTS_WRITE)),
    svc: Services = Depends(services),
) -> StoredBlobOut:
    validate_sha256(sha256)
    limit = svc.releases.blobs.max_blob_bytes
    spool_dir = str(svc.settings.data_dir)
    with tempfile.SpooledTemporaryFile(SPOOL_IN_MEMORY_BYTES, "w+b", dir=spool_dir) as spool:
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(f"blob is over the limit of {limit} bytes")
            spool.write(chunk)
        spool.seek(0)
        info = await run_in_threadpool(svc.releases.store_blob, ctx, sha256, cast(BinaryIO, spool))
    return StoredBlobOut(sha256=info.sha256, size_bytes=info.size_bytes)


@router.head("/{sha256}", summary="Whether a blob exists, and its size")
def blob_exists(
    sha256: str,
    who: Device | OperatorContext = Depends(device_or_operator),
    svc: Services = Depends(services),
) -> Response:
    blobs = svc.releases.blobs
    svc.blob_access.guard_read(who, validate_sha256(sha256))
    if not blobs.exists(sha256):
        return Response(status_code=404)
    headers = {"content-length": str(blobs.size_bytes(sha256)), "accept-ranges": "bytes"}
    return Response(status_code=200, headers=headers)


@router.get("/{sha256}", summary="Download a blob; supports Range: bytes=START-[END]")
def download_blob(
    sha256: str,
    request: Request,
    who: Device | OperatorContext = Depends(device_or_operator),
    svc: Services = Depends(services),
) -> Response:
    blobs = svc.releases.blobs
    svc.blob_access.guard_read(who, validate_sha256(sha256))
    size = blobs.size_bytes(sha256)
    header = request.headers.get("range")
    start, end = parse_range_header(header, size) if header else (0, size)
    return _ranged(blobs.open_range(sha256, start, end), header is not None)


@router.get(
    "/{sha256}/delta/{from_sha256}",
    summary="A delta that turns blob FROM into this blob, when one is worth it",
    responses={
        202: {"description": "Being computed; ask again after Retry-After seconds"},
        404: {"description": "No delta: unknown base, not smaller by the margin, or failed"},
        503: {"description": "role_not_served: this replica has no deltas role"},
    },
    dependencies=[Depends(served_by("deltas"))],
)
def download_delta(
    sha256: str,
    from_sha256: str,
    request: Request,
    who: Device | OperatorContext = Depends(device_or_operator),
    svc: Services = Depends(services),
) -> Response:
    svc.blob_access.guard_read(who, validate_sha256(sha256), validate_sha256(from_sha256))
    svc.releases.guard_delta_pair(from_sha256, sha256)
    status = svc.deltas.request(from_sha256, sha256)
    if status.state is DeltaState.PENDING:
        return JSONResponse(
            {"state": status.state.value},
            status_code=202,
            headers={"retry-after": str(DELTA_RETRY_AFTER_S)},
        )
    unavailable = NotFound(f"no delta from {from_sha256[:12]} to {sha256[:12]}: "
                           f"{status.state.value} {status.reason}".strip(),
                           code="delta_unavailable")  # fmt: skip
    if status.state is not DeltaState.READY:
        raise unavailable
    svc.deltas.touch(status.from_sha256, status.to_sha256)
    path = svc.deltas.path(status.from_sha256, status.to_sha256)
    header = request.headers.get("range")
    try:
        size = path.stat().st_size
        start, end = parse_range_header(header, size) if header else (0, size)
        reader = FileRangeReader(path, start, end, size)
    except FileNotFoundError:  # the cache evicted it a moment ago
        raise unavailable from None
    response = _ranged(reader, header is not None)
    response.headers["x-edgefleet-target-size"] = str(status.target_size)
    return response


def _ranged(reader: BlobReader, partial: bool) -> StreamingResponse:
    def chunks() -> Iterator[bytes]:
        try:
            yield from reader
        finally:
            reader.close()

    headers = {"accept-ranges": "bytes", "content-length": str(reader.length_bytes)}
    if partial:
        headers["content-range"] = reader.content_range
    return StreamingResponse(
        chunks(),
        status_code=206 if partial else 200,
        media_type="application/octet-stream",
        headers=headers,
    )
