"""The rehearsal lab: a rollout (and the fleet's faults) played in simulated time against
the control plane's pure core and modelled agents. See `rehearsal.py`."""
