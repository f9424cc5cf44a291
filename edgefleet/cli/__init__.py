"""The `edgefleet` command: operator verbs (kubectl style), `server` and `agent`."""
