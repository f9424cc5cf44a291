"""`python -m edgefleet.cli`: the same as the `edgefleet` command."""

from edgefleet.launcher import run

run()
