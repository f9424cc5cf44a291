"""`python -m edgefleet.agent`: the device agent's own process (what `edgefleet agent` runs)."""

from edgefleet.agent.command import main

main()
