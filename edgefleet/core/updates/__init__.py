"""Model updates on one device: releases and their versions, compatibility, the signed
service manifest, installation into A/B slots, restarts, and the hawkBit DDI mapping."""
