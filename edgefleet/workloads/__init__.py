"""Example workloads: small programs the agent's supervisor runs next to the models they serve.

They depend on the `inference` extra (onnxruntime, numpy) and on nothing of the agent's
except the generated-input helper shared with the sandbox check.
"""
