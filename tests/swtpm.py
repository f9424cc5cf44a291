"""A software TPM 2.0 (swtpm) on free loopback ports, for the attestation tests.

    swtpm socket --tpm2 --tpmstate dir=DIR --server type=tcp,port=P
                 --ctrl type=tcp,port=P+1 --flags not-need-init,startup-clear

tpm2-tools reach it with TPM2TOOLS_TCTI=swtpm:host=127.0.0.1,port=P (the agent's --tpm).

`manufacture` gives a TPM state an EK certificate the way a TPM vendor does, from a local
CA (swtpm_setup --create-ek-cert with swtpm_localca, package swtpm-tools).
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


def manufacture(state_dir: Path, ca_dir: Path) -> Path:
    """Make `state_dir` a TPM whose EK has a certificate (NV 0x01c00002) from the local CA in
    `ca_dir` (created on first use: a root and an issuing CA, both named swtpm-localca*);
    the issuing CA's certificate (PEM)."""
    if shutil.which("swtpm_setup") is None or shutil.which("swtpm_localca") is None:
        pytest.skip("needs swtpm_setup and swtpm_localca; apt-get install swtpm-tools")
    ca_dir.mkdir(parents=True, exist_ok=True)
    state_dir.mkdir(parents=True, exist_ok=True)
    (ca_dir / "localca.conf").write_text(
        f"statedir = {ca_dir}\nsigningkey = {ca_dir}/signkey.pem\n"
        f"issuercert = {ca_dir}/issuercert.pem\ncertserial = {ca_dir}/certserial\n")  # fmt: skip
    (ca_dir / "setup.conf").write_text(
        f"create_certs_tool = {shutil.which('swtpm_localca')}\n"
        f"create_certs_tool_config = {ca_dir}/localca.conf\n"
        "create_certs_tool_options = /dev/null\nactive_pcr_banks = sha256\n")  # fmt: skip
    subprocess.run(["swtpm_setup", "--tpm2", "--tpmstate", str(state_dir), "--create-ek-cert",
                    "--config", str(ca_dir / "setup.conf")],
                   check=True, capture_output=True, timeout=60)  # fmt: skip
    return ca_dir / "issuercert.pem"


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
