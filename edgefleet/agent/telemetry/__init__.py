"""The device's telemetry: collecting host and model metrics, the statsd and OTLP
receivers for workloads, the on-disk queue and its uploader, and sealing payloads."""
