"""Run the real `edgefleet` command in a subprocess, as an operator's shell would."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from typing import Any

from edgefleet.localfleet import EDGEFLEET


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(*args: str, env: dict[str, str] | None = None, timeout_s: float = 60) -> CliResult:
    base = {k: v for k, v in os.environ.items() if not k.startswith("EDGEFLEET_")}
    proc = subprocess.run(
        [*EDGEFLEET, *args],
        capture_output=True,
        text=True,
        env={**base, "COLUMNS": "200", **(env or {})},
        timeout=timeout_s,
    )
    return CliResult(proc.returncode, proc.stdout, proc.stderr)
