"""Blobs: content-addressed files. Operators upload (streamed); devices and operators
download, with HTTP Range so an interrupted download resumes where it stopped."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from typing import BinaryIO, cast

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import StreamingResponse
from starlette.concurrency import run_in_threadpool

from edgefleet.artifacts.blobstore import parse_range_header, validate_sha256
from edgefleet.core.device import Device
from edgefleet.errors import PayloadTooLarge
from edgefleet.server.auth import Services, device_or_operator, operator, services
from edgefleet.server.services.audit import OperatorContext

router = APIRouter(prefix="/v1/blobs", tags=["blobs"])

SPOOL_IN_MEMORY_BYTES = 8 * 1024 * 1024


@router.put("/{sha256}", status_code=201, summary="Upload a blob (the body is the file)")
async def upload_blob(
    sha256: str,
    request: Request,
    ctx: OperatorContext = Depends(operator),
    svc: Services = Depends(services),
) -> dict[str, object]:
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
    return {"sha256": info.sha256, "size_bytes": info.size_bytes}


@router.head("/{sha256}", summary="Whether a blob exists, and its size")
def blob_exists(
    sha256: str,
    _who: Device | OperatorContext = Depends(device_or_operator),
    svc: Services = Depends(services),
) -> Response:
    blobs = svc.releases.blobs
    if not blobs.exists(validate_sha256(sha256)):
        return Response(status_code=404)
    headers = {"content-length": str(blobs.size_bytes(sha256)), "accept-ranges": "bytes"}
    return Response(status_code=200, headers=headers)


@router.get("/{sha256}", summary="Download a blob; supports Range: bytes=START-[END]")
def download_blob(
    sha256: str,
    request: Request,
    _who: Device | OperatorContext = Depends(device_or_operator),
    svc: Services = Depends(services),
) -> Response:
    blobs = svc.releases.blobs
    size = blobs.size_bytes(validate_sha256(sha256))
    header = request.headers.get("range")
    start, end = parse_range_header(header, size) if header else (0, size)
    reader = blobs.open_range(sha256, start, end)

    def chunks() -> Iterator[bytes]:
        try:
            yield from reader
        finally:
            reader.close()

    headers = {"accept-ranges": "bytes", "content-length": str(reader.length_bytes)}
    if header:
        headers["content-range"] = reader.content_range
    return StreamingResponse(
        chunks(),
        status_code=206 if header else 200,
        media_type="application/octet-stream",
        headers=headers,
    )

