"""Attestation on the device: measure the software state, and with a TPM, extend the
measurement into a PCR and answer the control plane's nonce with a quote.

    measure (agent code, slots, settings) ─▶ with a TPM: extend PCR 16, challenge, quote
        ─▶ POST /v1/devices/{id}/attestation ─▶ sleep attestation_interval_s ─▶ again

The measurement is taken in a thread (it hashes the agent's files and the slots' files);
the TPM is driven through `tpm2-tools` subprocesses (TPM2TOOLS_TCTI from `--tpm`), so the
agent process loads no TPM library. The attestation key is created under the endorsement
key on first use (`tpm2_createek`, `tpm2_createak`), made persistent at AK_HANDLE, and its
public part (PEM) kept in DATA/attestation/ak.pem. Until the control plane names it as the
device's certified key (in each challenge), the agent has it certified by credential
activation first:

    EK public (+ EK certificate from NV), AK public and name ─▶ POST .../credential
        ◀─ credential ─▶ tpm2_activatecredential (EK policy session) ─▶ POST .../activation
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any

import edgefleet
from edgefleet.agent.link import ControlPlaneLink
from edgefleet.agent.settings import AgentSettings
from edgefleet.agent.slots import MANIFEST, SlotName, Slots
from edgefleet.clock import Clock
from edgefleet.core.backoff import jittered_interval_s
from edgefleet.core.governance.attestation import (
    MEASUREMENT_PCR,
    PCR_BANK,
    measurement_digest,
    replay_pcr,
)
from edgefleet.errors import ApiError, EdgefleetError, Unavailable

log = logging.getLogger(__name__)

EK_CERTIFICATE_NV_INDEX = "0x01c00002"  # the RSA EK's certificate (TCG EK Credential Profile)
AK_HANDLE = "0x81010016"  # the persistent handle of the attestation key
TOOL_TIMEOUT_S = 60.0
MAX_LOG = 1000  # measurements extended before the PCR is reset and the log starts over
_CHUNK = 1 << 20


class TpmError(EdgefleetError):
    """A tpm2-tools command failed (its stderr says why)."""


class FileHashes:
    """SHA-256 of files, re-read only when a file's inode, size, mtime or ctime changed: a
    release's model may be gigabytes, measured every few minutes. ctime cannot be set back
    without setting the clock, so a file rewritten with its old size and mtime is read again.
    """

    def __init__(self) -> None:
        self._known: dict[Path, tuple[tuple[int, int, int, int], str]] = {}

    def sha256(self, path: Path) -> str:
        st = path.stat()
        key = (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        known = self._known.get(path)
        if known is not None and known[0] == key:
            return known[1]
        digest = hashlib.sha256()
        with path.open("rb") as f:
            while chunk := f.read(_CHUNK):
                digest.update(chunk)
        self._known[path] = (key, digest.hexdigest())
        return digest.hexdigest()

    def optional(self, path: Path | None) -> str | None:
        return self.sha256(path) if path is not None and path.is_file() else None


def measure_agent_code(package: Path, hashes: FileHashes) -> dict[str, Any]:
    """The agent's version and the SHA-256 over the path and hash of every file of the
    installed edgefleet package (compiled caches left out)."""
    digest = hashlib.sha256()
    count = 0
    for path in sorted(package.rglob("*")):
        if not path.is_file() or "__pycache__" in path.parts or path.suffix == ".pyc":
            continue
        line = f"{path.relative_to(package).as_posix()}\0{hashes.sha256(path)}\n"
        digest.update(line.encode())
        count += 1
    return {"version": edgefleet.__version__, "sha256": digest.hexdigest(), "files": count}


def measure_slots(slots: Slots, hashes: FileHashes) -> dict[str, Any]:
    """Each filled slot's release and the SHA-256 of each of its files as they are on disk
    now ("missing" for a file that is gone)."""
    out: dict[str, Any] = {}
    for slot in SlotName:
        manifest = slots.manifest(slot)
        if manifest is None:
            continue
        directory = slots.path(slot)
        files = {}
        for artifact, name in sorted(dict(manifest.get("files") or {}).items()):
            path = directory / str(name)
            files[artifact] = hashes.sha256(path) if path.is_file() and name != MANIFEST else (
                "missing")  # fmt: skip
        out[slot.value] = {"release": manifest.get("release"),
                           "version": manifest.get("version"), "files": files}  # fmt: skip
    return out


def measure(settings: AgentSettings, slots: Slots, hashes: FileHashes) -> dict[str, Any]:
    """The measurement of this device's software state: agent code, slots, settings."""
    return {
        "agent": measure_agent_code(Path(edgefleet.__file__).parent, hashes),
        "slots": measure_slots(slots, hashes),
        "config": {
            "server_url": settings.server_url,
            "root_file_sha256": hashes.optional(settings.root_file),
            "ca_file_sha256": hashes.optional(settings.ca_file),
            "service_user": settings.service_user,
            "sandbox_memory_limit_mb": settings.sandbox_memory_limit_mb,
            "sandbox_timeout_s": settings.sandbox_timeout_s,
            "tpm": settings.tpm is not None,
        },
    }


class Tpm:
    """The device's TPM through tpm2-tools, at `tcti` (e.g. device:/dev/tpmrm0)."""

    def __init__(self, tcti: str, state_dir: Path) -> None:
        self._env = {**os.environ, "TPM2TOOLS_TCTI": tcti}
        self._dir = state_dir
        self._pcr = f"{PCR_BANK}:{MEASUREMENT_PCR}"

    async def _run(self, *args: str) -> bytes:
        try:
            process = await asyncio.create_subprocess_exec(
                *args, env=self._env, cwd=self._dir, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)  # fmt: skip
        except FileNotFoundError:
            raise TpmError(f"{args[0]} not found: install tpm2-tools") from None
        try:
            out, err = await asyncio.wait_for(process.communicate(), TOOL_TIMEOUT_S)
        except TimeoutError:
            process.kill()
            await process.wait()
            raise TpmError(f"{args[0]} did not finish within {TOOL_TIMEOUT_S:g} s") from None
        if process.returncode != 0:
            lines = err.decode(errors="replace").strip().splitlines()
            raise TpmError(f"{args[0]} failed: {lines[-1] if lines else process.returncode}")
        return out

    async def attestation_key(self) -> str:
        """The attestation key's public part (PEM), created and persisted on first use."""
        pem = self._dir / "ak.pem"
        if pem.is_file():
            return pem.read_text()
        self._dir.mkdir(parents=True, exist_ok=True)
        await self._run("tpm2_createek", "-c", "ek.ctx", "-G", "rsa", "-u", "ek.pub")
        await self._run("tpm2_createak", "-C", "ek.ctx", "-c", "ak.ctx", "-G", "rsa", "-g",
                        "sha256", "-s", "rsassa", "-u", "ak.new.pem", "-f", "pem", "-n",
                        "ak.name")  # fmt: skip
        await self._run("tpm2_flushcontext", "-t")  # the EK and AK stay loaded otherwise
        with contextlib.suppress(TpmError):  # a key an earlier data directory left there
            await self._run("tpm2_evictcontrol", "-C", "o", "-c", AK_HANDLE)
        await self._run("tpm2_evictcontrol", "-C", "o", "-c", "ak.ctx", AK_HANDLE)
        await self._run("tpm2_flushcontext", "-t")
        for name in ("ek.ctx", "ak.ctx"):
            (self._dir / name).unlink(missing_ok=True)
        os.replace(self._dir / "ak.new.pem", pem)
        return pem.read_text()

    async def key_offer(self) -> dict[str, Any]:
        """What the control plane needs to certify the attestation key: the EK's and the
        AK's public areas (tss format, base64), the AK's name (hex) and PEM, and the EK
        certificate (DER, base64) when the TPM holds one."""
        with tempfile.TemporaryDirectory(dir=self._dir) as tmp:
            work = Path(tmp)
            await self._run("tpm2_createek", "-c", str(work / "ek.ctx"), "-G", "rsa",
                            "-u", str(work / "ek.pub"))  # fmt: skip
            await self._run("tpm2_flushcontext", "-t")
            await self._run("tpm2_readpublic", "-c", AK_HANDLE, "-f", "tss",
                            "-o", str(work / "ak.pub"), "-n", str(work / "ak.name"))  # fmt: skip
            certificate = None
            indexes = await self._run("tpm2_getcap", "handles-nv-index")
            if int(EK_CERTIFICATE_NV_INDEX, 16) in _handles(indexes):
                await self._run("tpm2_nvread", EK_CERTIFICATE_NV_INDEX, "-o",
                                str(work / "ek.crt"))  # fmt: skip
                certificate = _b64(work / "ek.crt")
            return {"ek_public": _b64(work / "ek.pub"), "ek_certificate": certificate,
                    "ak_public": _b64(work / "ak.pub"),
                    "ak_name": (work / "ak.name").read_bytes().hex(),
                    "attestation_key": await self.attestation_key()}  # fmt: skip

    async def activate_credential(self, credential: bytes) -> bytes:
        """The secret `credential` holds, as the TPM opens it with the EK and the AK (the
        EK's policy: PolicySecret on the endorsement hierarchy, in a policy session)."""
        with tempfile.TemporaryDirectory(dir=self._dir) as tmp:
            work = Path(tmp)
            (work / "credential").write_bytes(credential)
            ek, session = str(work / "ek.ctx"), str(work / "session.ctx")
            await self._run("tpm2_createek", "-c", ek, "-G", "rsa")
            await self._run("tpm2_startauthsession", "--policy-session", "-S", session)
            try:
                await self._run("tpm2_policysecret", "-S", session, "-c", "e")
                await self._run("tpm2_activatecredential", "-c", AK_HANDLE, "-C", ek, "-i",
                                str(work / "credential"), "-o", str(work / "secret"),
                                "-P", f"session:{session}")  # fmt: skip
            finally:
                with contextlib.suppress(TpmError):
                    await self._run("tpm2_flushcontext", session)
                await self._run("tpm2_flushcontext", "-t")
            return (work / "secret").read_bytes()

    async def read_pcr(self) -> str:
        """The measurement PCR's value (hex)."""
        with tempfile.NamedTemporaryFile(dir=self._dir) as out:
            await self._run("tpm2_pcrread", self._pcr, "-o", out.name)
            return Path(out.name).read_bytes().hex()

    async def reset_pcr(self) -> None:
        await self._run("tpm2_pcrreset", str(MEASUREMENT_PCR))

    async def extend(self, digest: str) -> None:
        await self._run("tpm2_pcrextend", f"{MEASUREMENT_PCR}:{PCR_BANK}={digest}")

    async def quote(self, nonce: str) -> dict[str, Any]:
        """A quote over the measurement PCR and `nonce` (hex): the TPMS_ATTEST message and
        TPMT_SIGNATURE (base64) and the PCR value it covers."""
        with tempfile.TemporaryDirectory(dir=self._dir) as tmp:
            msg, sig = Path(tmp) / "msg", Path(tmp) / "sig"
            await self._run("tpm2_quote", "-c", AK_HANDLE, "-l", self._pcr, "-q", nonce,
                            "-m", str(msg), "-s", str(sig), "-g", "sha256")  # fmt: skip
            message, signature = msg.read_bytes(), sig.read_bytes()
        return {"message": base64.b64encode(message).decode(),
                "signature": base64.b64encode(signature).decode()}  # fmt: skip


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def _handles(getcap: bytes) -> set[int]:
    """The handles `tpm2_getcap handles-*` lists (`- 0x1C00002` lines)."""
    return {int(line.strip()[2:], 16) for line in getcap.decode().splitlines()
            if line.strip().startswith("- 0x")}  # fmt: skip


class Attestor:
    """Measures and reports every `attestation_interval_s` (jittered), from the start of
    each connection; a failure is logged and tried again at the next interval."""

    def __init__(self, settings: AgentSettings, link: ControlPlaneLink, clock: Clock,
                 slots_root: Path, rng: random.Random) -> None:  # fmt: skip
        self._settings = settings
        self._link = link
        self._clock = clock
        self._slots = Slots(slots_root)
        self._hashes = FileHashes()
        self._rng = rng
        self._tpm = (Tpm(settings.tpm, settings.data_dir / "attestation")
                     if settings.tpm else None)  # fmt: skip
        self._log: list[str] = []  # digests extended since this agent reset the PCR
        self._reset = False
        self.last: dict[str, Any] | None = None  # the control plane's latest answer

    async def run(self) -> None:
        while True:
            try:
                self.last = await self.attest_once()
            except (ApiError, Unavailable, TpmError, OSError) as e:
                log.warning("attestation failed", extra={"device_id": self._link.device_id,
                                                         "error": str(e)})  # fmt: skip
            interval = self._settings.attestation_interval_s
            await self._clock.sleep(jittered_interval_s(interval, 0.1, self._rng))

    async def attest_once(self) -> dict[str, Any]:
        """Measure, quote when there is a TPM, report; the control plane's verdict."""
        measurement = await asyncio.to_thread(measure, self._settings, self._slots, self._hashes)
        digest = measurement_digest(measurement)
        payload: dict[str, Any] = {"measurement": measurement, "digest": digest}
        if self._tpm is not None:
            payload["tpm"] = await self._quote(self._tpm, digest)
        answer = await self._link.attest(payload)
        level = logging.WARNING if answer.get("status") == "failed" else logging.INFO
        log.log(level, "attested", extra={"device_id": self._link.device_id,
                                          "status": answer.get("status"),
                                          "reason": answer.get("reason")})  # fmt: skip
        return answer

    async def _quote(self, tpm: Tpm, digest: str) -> dict[str, Any]:
        key = await tpm.attestation_key()
        if (
            not self._reset
            or len(self._log) >= MAX_LOG
            or await tpm.read_pcr() != replay_pcr(self._log)
        ):
            await tpm.reset_pcr()  # first use, a long log, or a TPM reset under the agent
            self._log, self._reset = [], True
        if not self._log or self._log[-1] != digest:
            await tpm.extend(digest)
            self._log.append(digest)
        challenge = await self._link.attestation_challenge()
        if challenge.get("attestation_key") != key:
            await self._certify(tpm)
            challenge = await self._link.attestation_challenge()
        quote = await tpm.quote(str(challenge["nonce"]))
        pcr = await tpm.read_pcr()
        return {
            "nonce": challenge["nonce"],
            "attestation_key": key,
            **quote,
            "pcrs": {str(MEASUREMENT_PCR): pcr},
            "log": list(self._log),
        }

    async def _certify(self, tpm: Tpm) -> None:
        """Have the attestation key certified by credential activation (ApiError, with the
        reason, when the control plane refuses it)."""
        answer = await self._link.offer_attestation_key(await tpm.key_offer())
        secret = await tpm.activate_credential(base64.b64decode(str(answer["credential"])))
        certified = await self._link.activate_attestation_key(secret)
        extra = {"device_id": self._link.device_id, "ek_name": certified.get("ek_name")}
        log.info("attestation key certified", extra=extra)
