"""Governance: who may do what to which devices (roles, scopes), what needs a second
operator's approval, declarative policies, and whether a device's software state is
attested."""
