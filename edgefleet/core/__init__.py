"""The pure domain of edgefleet: frozen data and decisions, no I/O, no clock, no logging.

Every function here takes `now` (and any randomness) as an argument, so the same logic runs
in the server, in virtual devices and in accelerated rehearsals.
"""
