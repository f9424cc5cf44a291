"""Which extra brings a missing package: read from the requirement lines of the metadata."""

from __future__ import annotations

from edgefleet.extras import extras_providing

REQUIRES = [
    "pyyaml>=6",
    'psutil>=5.9; extra == "agent"',
    'numpy>=1.26; extra == "inference"',
    'numpy>=1.26; extra == "cli"',
    'uvicorn>=0.29; extra == "server"',
    'pydantic-settings>=2.2; extra == "server"',
    'edgefleet[agent,cli]; extra == "dev"',
    'pytest>=8; extra == "dev"',
]


def test_the_extras_that_bring_a_module() -> None:
    assert extras_providing("uvicorn", REQUIRES) == ["server"]
    assert extras_providing("uvicorn.config", REQUIRES) == ["server"]
    assert extras_providing("numpy", REQUIRES) == ["cli", "inference"]
    assert extras_providing("pydantic_settings", REQUIRES) == ["server"]  # import name
    assert extras_providing("yaml", REQUIRES) == []  # the base install's
    assert extras_providing("pytest", REQUIRES) is None  # development only
    assert extras_providing("edgefleet.server.nothing", REQUIRES) is None  # a bug, not extra
