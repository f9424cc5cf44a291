"""edgefleet: edge orchestration for fleets of constrained devices serving ML models."""

__version__ = "0.1.0"
