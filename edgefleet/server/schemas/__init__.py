"""Wire schemas of the HTTP API (pydantic), one module per noun as in `server/routes/`:
requests are strict (unknown fields refused), responses are typed so /openapi.json says
exactly what each route answers."""

# routes/device_api.py (its protocol is being reworked) still imports these from here.
from edgefleet.server.schemas.device_api import (
    EnrollRequest,
    EnrollResponse,
    ReportRequest,
    ReportResponse,
)

__all__ = ["EnrollRequest", "EnrollResponse", "ReportRequest", "ReportResponse"]
