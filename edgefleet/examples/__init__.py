"""Example programs that run as workloads or beside them: the ONNX inference server, a
client that follows a workload's weighted endpoints, and a release traffic generator."""
