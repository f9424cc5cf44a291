"""Wire schemas of the HTTP API (pydantic), one module per noun as in `server/routes/`:
requests are strict (unknown fields refused), responses are typed so /openapi.json says
exactly what each route answers. The device routes' bodies are the device protocol's
(core/protocol/), not schemas here."""
