"""Federated training: the manifest, the round planner, secure aggregation and privacy
accounting, as pure functions over plain data (docs/learning.md)."""
