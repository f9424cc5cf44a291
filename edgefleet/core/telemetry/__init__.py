"""Telemetry as pure structures: windows and sketches, the device batch encoding, series
and rollups, sampling, the ingest clock, and what the fleet's telemetry means (KPIs,
anomalies, drift, alerts)."""
