"""Control-plane settings: one frozen object per process, from flags and EDGEFLEET_* vars."""

from __future__ import annotations

import os
import secrets
import socket
from pathlib import Path
from typing import Any

from cryptography import x509
from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from edgefleet.core.governance.attestation import AttestationPolicy, parse_policy
from edgefleet.errors import SettingsError
from edgefleet.logfmt import check_level

# What a replica can do (`roles`); all of them unless told otherwise.
ROLES = ("api", "device", "controllers", "deltas")


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EDGEFLEET_", frozen=True, extra="ignore")

    data_dir: Path = Field(description="Directory for the database and blobs (created if absent).")
    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to listen on (0: any free).")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy URL; default SQLite in the data dir. "
        "PostgreSQL: postgresql+psycopg://user@host/db",
    )
    admin_token: SecretStr | None = Field(
        None,
        description="First admin API token (16 characters or more), used only while the data "
        "dir has no API token.",
    )
    max_body_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest request body accepted on the API."
    )
    heartbeat_interval_s: float = Field(
        15.0, gt=0, le=3600, description="Heartbeat interval given to newly enrolled devices."
    )
    max_blob_bytes: int = Field(4 * 1024**3, ge=1024, description="Largest artifact file accepted.")
    delta_cache_bytes: int = Field(
        2 * 1024**3,
        ge=0,
        description="Disk kept for computed deltas; the least recently used go first.",
    )
    long_poll_max_s: float = Field(
        30.0, gt=0, le=300, description="Longest a desired-state long poll is held open."
    )
    keep_alive_s: int = Field(
        75,
        ge=1,
        le=3600,
        description="Seconds an idle kept-alive connection stays open (longer than the agent's "
        "50 s, so agents reuse one connection across heartbeats and close it first).",
    )
    max_clock_skew_s: int = Field(
        300, ge=5, le=3600, description="Largest accepted gap between device and server clocks."
    )
    log_level: str = Field("info", description="Logging level: debug, info, warning, error.")
    housekeeping_interval_s: float = Field(
        60.0,
        gt=0,
        le=3600,
        description="Seconds between background housekeeping runs (nonces, TUF refresh, "
        "telemetry rollups and retention, delta cache).",
    )
    telemetry_raw_retention_days: float = Field(
        7.0,
        gt=0,
        le=3650,
        description="Keep raw telemetry windows this long; older ones become hourly rollups.",
    )
    telemetry_rollup_retention_days: float = Field(
        90.0, gt=0, le=36500, description="Keep hourly telemetry rollups this long."
    )
    telemetry_analysis_interval_s: float = Field(
        300.0,
        gt=0,
        le=86400,
        description="Seconds between drift and cohort analyses of KPI distributions.",
    )
    alert_history_days: float = Field(
        30.0, gt=0, le=3650, description="Keep closed alerts this long."
    )
    telemetry_max_query_windows: int = Field(
        200_000, ge=1000, description="Most stored windows one telemetry query may read."
    )
    otlp_endpoint: str | None = Field(
        None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="Base URL of an OTLP/HTTP collector; stored telemetry windows are "
        "exported to it (POST {endpoint}/v1/metrics, protobuf). Unset: no export.",
    )
    otlp_headers: SecretStr | None = Field(
        None,
        description="Headers sent with every OTLP export, as key=value,key2=value2 "
        "(the format of OTEL_EXPORTER_OTLP_HEADERS), e.g. authorization=Bearer TOKEN.",
    )
    otlp_queue_max_windows: int = Field(
        100_000,
        ge=100,
        description="Windows waiting for export at most; what does not fit is dropped and "
        "counted (edgefleet_otlp_dropped_windows_total).",
    )
    otlp_batch_max_windows: int = Field(
        2000, ge=1, le=100_000, description="Windows (data points) per OTLP export request."
    )
    otlp_timeout_s: float = Field(
        10.0, gt=0, le=300, description="Time limit of one OTLP export request."
    )
    device_certificate_lifetime_s: float = Field(
        86400.0,
        ge=5,
        le=90 * 86400,
        description="Lifetime of the device certificates the device CA issues (agents renew "
        "at 2/3 of it); short, since brokers learn of revocations only through the CRL.",
    )
    tls_cert: Path | None = Field(
        None, description="PEM certificate (chain) to serve https with; with tls_key."
    )
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert.")
    client_ca: Path | None = Field(
        None,
        description="CA certificates (PEM) client certificates are verified against "
        "(the device CA: DATA_DIR/device-ca/ca.crt); a device presenting one is authenticated "
        "by it. Needs tls_cert.",
    )
    ddi_tenant: str = Field(
        "default",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$",
        description="The hawkBit DDI tenant that new DDI targets and gateway tokens belong "
        "to (/ddi/TENANT/controller/v1/...).",
    )
    ddi_releases: str = Field(
        "",
        description="Comma-separated names of the releases DDI devices may be assigned "
        "(DDI clients verify hashes over TLS, not TUF signatures); empty: none.",
    )
    attestation_policy: str = Field(
        "",
        description="What a device whose attestation failed loses, comma-separated: "
        "releases (its release section is withheld), workloads (it takes no replicas; its "
        "replicas move off), label (it is labelled attestation=failed); empty: report only.",
    )
    attestation_require_tpm: bool = Field(
        False,
        description="A device whose measurement no TPM quote vouches for (attestation "
        "unverified) counts as failed for attestation_policy.",
    )
    tpm_ca_file: Path | None = Field(
        None,
        description="The TPM manufacturers' CA certificates (PEM, issuing CAs included) a "
        "device's EK certificate must be signed by: a device whose TPM has none, or one from "
        "another CA, has its attestation key refused (attestation failed). Unset: EK "
        "certificates are not required, and a TPM is known by its EK only.",
    )

    roles: str = Field(
        ",".join(ROLES),
        description="What this replica does, comma-separated: api (operator "
        "routes), device (device routes), controllers (the background loops, each under a "
        "database lease), deltas (computes and serves deltas).",
    )
    replica_id: str = Field(
        default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(3)}",
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="This replica's name in leases, /readyz and logs [hostname-pid-random].",
    )
    lease_ttl_s: float = Field(
        6.0,
        ge=0.3,
        le=600,
        description="A controller lease's lifetime: renewed every third of it; a replica that "
        "dies is replaced after at most this long (plus a renewal interval).",
    )

    mqtt_url: SecretStr | None = Field(
        None,
        description="MQTT broker for the device channel, mqtt[s]://USER:PASSWORD@HOST:PORT "
        "(a client that may administer Mosquitto's dynamic-security plugin): devices report "
        "over it and get their desired state pushed, retained. Unset: HTTP only.",
    )
    mqtt_ca_file: Path | None = Field(
        None, description="CA certificates (PEM) an mqtts:// broker is checked against."
    )
    mqtt_client_id: str | None = Field(
        None,
        min_length=1,
        max_length=128,
        pattern=r"^[A-Za-z0-9._:-]+$",
        description="This replica's MQTT client id, the name of its persistent session "
        "[edgefleet-REPLICA_ID]: keep it across restarts (set EDGEFLEET_REPLICA_ID) so a "
        "restarted replica resumes its session and loses no message.",
    )
    mqtt_session_expiry_s: int = Field(
        3600,
        ge=0,
        le=7 * 86400,
        description="How long the broker keeps a disconnected replica's session and its "
        "share of messages.",
    )
    mqtt_idle_heartbeat_s: float = Field(
        300.0,
        ge=1,
        le=3600,
        description="Heartbeat interval of a device online on the MQTT channel that hosts no "
        "replica: the broker's keep-alive and the device's Last Will stand for its "
        "heartbeats, and reports on a change still go at once. Taken when the device "
        "connects.",
    )

    @field_validator("attestation_policy")
    @classmethod
    def _known_actions(cls, actions: str) -> str:
        parse_policy(actions)
        return actions

    @field_validator("tpm_ca_file")
    @classmethod
    def _certificates(cls, path: Path | None) -> Path | None:
        if path is not None:
            load_tpm_cas(path)
        return path

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, level: str) -> str:
        return check_level(level)

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, roles: str) -> str:
        names = [r.strip() for r in roles.split(",") if r.strip()]
        unknown = sorted(set(names) - set(ROLES))
        if unknown or not names:
            raise ValueError(
                f"roles are a comma-separated subset of {', '.join(ROLES)}"
                + (f"; unknown: {', '.join(unknown)}" if unknown else "")
            )
        return ",".join(r for r in ROLES if r in names)

    @field_validator("mqtt_url")
    @classmethod
    def _broker_url(cls, url: SecretStr | None) -> SecretStr | None:
        if url is not None:
            from edgefleet.transport.mqtt_client import BrokerUrl

            BrokerUrl.parse(url.get_secret_value())
        return url

    def resolved_mqtt_client_id(self) -> str:
        """The MQTT client id: set, or derived from the replica id."""
        return self.mqtt_client_id or f"edgefleet-{self.replica_id}"

    def role_names(self) -> frozenset[str]:
        """The roles of `roles`."""
        return frozenset(self.roles.split(","))

    @field_validator("admin_token")
    @classmethod
    def _long_enough(cls, token: SecretStr | None) -> SecretStr | None:
        if token is not None and len(token.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return token

    def attestation(self) -> AttestationPolicy:
        """The policy of `attestation_policy` and `attestation_require_tpm`."""
        return parse_policy(self.attestation_policy, require_tpm=self.attestation_require_tpm)

    def trusted_tpm_cas(self) -> tuple[x509.Certificate, ...] | None:
        """The certificates of `tpm_ca_file`; None when it is unset."""
        return None if self.tpm_ca_file is None else load_tpm_cas(self.tpm_ca_file)

    def ddi_release_names(self) -> frozenset[str]:
        """The release names of `ddi_releases`."""
        return frozenset(n.strip() for n in self.ddi_releases.split(",") if n.strip())

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'edgefleet.db').resolve()}"


# The settings `edgefleet server` has a flag for (the others are variables only).
FLAGS = {"data_dir": "--data-dir", "host": "--host", "port": "--port",
         "tpm_ca_file": "--tpm-ca-file",
         "database_url": "--database-url", "heartbeat_interval_s": "--heartbeat-interval",
         "log_level": "--log-level", "mqtt_url": "--mqtt"}  # fmt: skip


def load_tpm_cas(path: Path) -> tuple[x509.Certificate, ...]:
    """The PEM certificates in `path`; ValueError when it cannot be read or holds none."""
    try:
        certificates = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as e:
        raise ValueError(f"cannot read {path}: {e.strerror}") from None
    except ValueError:
        raise ValueError(f"{path} holds no PEM certificate") from None
    return tuple(certificates)


def load_server_settings(**overrides: Any) -> ServerSettings:
    """Settings from EDGEFLEET_* variables, overridden by non-None flag values."""
    given = {k: v for k, v in overrides.items() if v is not None}
    try:
        return ServerSettings(**given)
    except ValidationError as e:
        first = e.errors()[0]
        key = str(first["loc"][0]) if first["loc"] else "?"
        flag = f"flag {FLAGS[key]} or " if key in FLAGS else ""
        raise SettingsError(
            f"bad setting {key} ({flag}env EDGEFLEET_{key.upper()}): {first['msg']}"
        ) from None
