"""Device certificates: the device CA's certificate and revocation list (public), and
certificates issued to devices for their own keys."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from starlette.concurrency import run_in_threadpool

from edgefleet.core.device import Device
from edgefleet.server.auth import no_credentials, signed_device
from edgefleet.server.composition import Services, services
from edgefleet.server.error_handlers import request_id_of
from edgefleet.server.schemas.certificates import CertificateRequest, IssuedCertificateResponse

router = APIRouter(prefix="/v1", tags=["device certificates"])

PEM_CERTIFICATE = "application/x-pem-file"


@router.get("/device-ca/certificate", summary="The device CA's certificate (PEM)",
            dependencies=[Depends(no_credentials)])  # fmt: skip
def ca_certificate(svc: Services = Depends(services)) -> Response:
    return Response(svc.certificates.ca_certificate_pem, media_type=PEM_CERTIFICATE)


@router.get("/device-ca/crl", summary="Revocation list of the device CA (PEM), for brokers",
            dependencies=[Depends(no_credentials)])  # fmt: skip
async def revocation_list(svc: Services = Depends(services)) -> Response:
    crl = await run_in_threadpool(svc.certificates.revocation_list)
    return Response(crl, media_type=PEM_CERTIFICATE)


@router.post("/devices/{device_id}/certificate",
             summary="Issue a short-lived certificate for the device's own key")  # fmt: skip
async def issue_certificate(
    request: Request,
    body: CertificateRequest,
    device: Device = Depends(signed_device),
    svc: Services = Depends(services),
) -> IssuedCertificateResponse:
    answer = await run_in_threadpool(svc.certificates.issue, device, body.csr,
                                     request_id_of(request))  # fmt: skip
    return IssuedCertificateResponse.model_validate(answer)
