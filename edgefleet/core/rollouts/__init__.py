"""Rollouts: a release taken to a fleet in waves behind health gates and maintenance
windows, release trains, and the records the controller keeps of each."""
