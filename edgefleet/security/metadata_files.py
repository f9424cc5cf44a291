"""The files a device keeps in its TUF metadata directory, named once for the code that
loads python-tuf (`tuf_client`) and the lean code that must not (the agent's check of
signed desired state)."""

# python-tuf's newest verified root (it writes this name itself).
TRUSTED_ROOT = "root.json"
# The root the device enrolled with: the anchor it falls back to and checks rotations from.
ENROLLMENT_ROOT = "enrollment_root.json"
