"""HTTP wire schemas: certificates issued to devices for their own keys."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CertificateRequest(BaseModel):
    csr: str = Field(max_length=16384, description="PEM CSR signed by the device's own key")


class IssuedCertificateResponse(BaseModel):
    certificate: str
    ca_certificate: str
    serial: str
    not_before: str
    not_after: str
    renew_after: str
