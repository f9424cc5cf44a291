"""Artifacts: content-addressed blobs, ONNX inspection, compression and delta encoding."""
