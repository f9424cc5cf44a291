"""Telemetry: windows and sketches, wire format, store-and-forward queue, ingest, queries."""
