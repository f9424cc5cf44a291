"""A software TPM 2.0 (swtpm) on free loopback ports, for the attestation tests.

    swtpm socket --tpm2 --tpmstate dir=DIR --server type=tcp,port=P
                 --ctrl type=tcp,port=P+1 --flags not-need-init,startup-clear

tpm2-tools reach it with TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=P (the agent's --tpm).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

TOOLS = ("swtpm", "tpm2_createek", "tpm2_createak", "tpm2_quote", "tpm2_pcrextend")


def require_tpm_tools() -> None:
    """Skip the test unless swtpm and tpm2-tools are installed (`make tools` installs them)."""
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.skip(f"needs swtpm and tpm2-tools (missing: {', '.join(missing)}); "
                    "apt-get install swtpm swtpm-tools tpm2-tools")  # fmt: skip


def _free_port_pair() -> int:
    for _ in range(100):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            if port >= 65535:
                continue
            with socket.socket() as b:
                try:
                    b.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("no two consecutive free ports")


@contextmanager
def swtpm(state_dir: Path) -> Iterator[str]:
    """A running swtpm; yields its TCTI. Stopped (and waited for) at the end."""
    require_tpm_tools()
    state_dir.mkdir(parents=True, exist_ok=True)
    port = _free_port_pair()
    process = subprocess.Popen(
        ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={state_dir}",
         "--server", f"type=tcp,port={port}", "--ctrl", f"type=tcp,port={port + 1}",
         "--flags", "not-need-init,startup-clear"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("swtpm did not start") from None
                time.sleep(0.05)
        yield f"swtpm:host=127.0.0.1,port={port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def tpm2(tcti: str, *args: str, cwd: Path) -> bytes:
    """Run one tpm2-tools command against the TPM at `tcti`."""
    env = {**os.environ, "TPM2TOOLS_TCTI": tcti}
    return subprocess.run(args, env=env, cwd=cwd, check=True, capture_output=True).stdout
