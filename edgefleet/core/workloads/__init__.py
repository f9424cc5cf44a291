"""Workloads: declared services placed on nodes (placement and its explanation), their
endpoints, liveness and failover of nodes, and planned migrations."""
