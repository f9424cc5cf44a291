"""Agent settings: one frozen object per agent, from flags and EDGEFLEET_* variables."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from edgefleet.core.device_names import validate_device_name
from edgefleet.errors import InvalidInput, SettingsError
from edgefleet.transport.http_proxy import ProxySettings


@dataclass(frozen=True)
class AgentSettings:
    server_url: str
    data_dir: Path
    enroll_token: str | None = None
    # CA certificates an https control plane's certificate is checked against (PEM); None:
    # the system's trust store (SSL_CERT_FILE / SSL_CERT_DIR honoured).
    ca_file: Path | None = None
    # The fleet's TUF root, pinned out of band: the root handed over at enrollment must be
    # this one or chain from it. None: the agent trusts the root it is handed.
    root_file: Path | None = None
    # Keep a device certificate from the fleet's device CA (renewed at 2/3 of its life) and
    # present it to an https control plane (mutual TLS).
    device_certificate: bool = False
    # Upload telemetry only sealed to the control plane's ingest key (batches wait in the
    # queue while the desired state names none); without it, sealed whenever it names one.
    seal_telemetry: bool = False
    # Forward proxies (HTTPS_PROXY / HTTP_PROXY / NO_PROXY); None: direct connections.
    proxies: ProxySettings | None = None
    # The MQTT device channel (mqtt[s]://HOST:PORT): reports and the pushed desired state go
    # over it, enrollment and downloads stay on HTTP; None: HTTP only. Its CA file (mqtts).
    mqtt_url: str | None = None
    mqtt_ca_file: Path | None = None
    name: str = "device"
    labels: dict[str, str] = field(default_factory=dict)
    heartbeat_interval_s: float = 15.0
    long_poll_s: float = 30.0
    min_backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    region: str | None = None
    zone: str | None = None
    timezone: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    accelerators: tuple[str, ...] = ()
    sandbox_memory_limit_mb: int = 1024
    sandbox_timeout_s: float = 60.0
    # Telemetry: the workloads' StatsD endpoint on loopback (0: any free port), how often the
    # host is read, how often closed windows are cut into a queued batch, the queue bounds.
    statsd_port: int = 8125
    # The workloads' OTLP/HTTP metrics endpoint on loopback (0: any free port; None: off).
    otlp_port: int | None = 4318
    telemetry_sample_interval_s: float = 10.0
    telemetry_batch_interval_s: float = 60.0
    telemetry_queue_max_bytes: int = 16 * 1024 * 1024
    telemetry_queue_max_rows: int = 10_000
    # Workloads: the host clients reach this device's replicas at; a simulated battery
    # (`START[:DRAIN_PER_MIN]`, tests and demos only).
    advertise_address: str = "127.0.0.1"
    simulated_battery: str | None = None
    # Who the release service and workloads run as (a user name); None: the default
    # (edgefleet-svc when the agent runs as root and that user exists).
    service_user: str | None = None
    # Attestation: how often the software state is measured and reported (0: never), and
    # the TPM's TCTI (e.g. device:/dev/tpmrm0) to extend and quote the measurement with.
    attestation_interval_s: float = 600.0
    tpm: str | None = None

    def __post_init__(self) -> None:
        parsed = urlparse(self.server_url)
        if parsed.scheme not in ("http", "https") or not parsed.netloc:
            raise SettingsError(
                f"bad setting server (--server / EDGEFLEET_SERVER): {self.server_url!r} "
                "is not an http(s) URL"
            )
        try:
            validate_device_name(self.name)
        except InvalidInput as e:  # the control plane would refuse it at every enrollment
            raise SettingsError(f"bad setting name (--name): {e.message}") from None
        if self.mqtt_url is not None:
            from edgefleet.transport.mqtt_client import BrokerUrl

            try:
                BrokerUrl.parse(self.mqtt_url)
            except ValueError as e:
                raise SettingsError(f"bad setting mqtt (--mqtt / EDGEFLEET_MQTT): {e}") from None
        if self.mqtt_ca_file is not None and not self.mqtt_ca_file.is_file():
            raise SettingsError(
                f"bad setting mqtt_ca_file (--mqtt-ca-file / "
                f"EDGEFLEET_MQTT_CA_FILE): {self.mqtt_ca_file} is not a file"
            )
        if self.ca_file is not None and not self.ca_file.is_file():
            raise SettingsError(
                f"bad setting ca_file (--ca-file / EDGEFLEET_CA_FILE): {self.ca_file} is not a file"
            )
        if self.root_file is not None and not self.root_file.is_file():
            raise SettingsError(
                f"bad setting root_file (--root-file / EDGEFLEET_ROOT_FILE): "
                f"{self.root_file} is not a file"
            )
        checks = [
            ("heartbeat_interval", 1 <= self.heartbeat_interval_s <= 3600, "1..3600 seconds"),
            ("long_poll", 1 <= self.long_poll_s <= 300, "1..300 seconds"),
            ("min_backoff", 0 < self.min_backoff_s <= self.max_backoff_s, "0 < min <= max"),
            ("max_backoff", self.max_backoff_s <= 3600, "at most 3600 seconds"),
            ("statsd_port", 0 <= self.statsd_port <= 65535, "0..65535 (0: any free port)"),
            (
                "otlp_port",
                self.otlp_port is None or 0 <= self.otlp_port <= 65535,
                "0..65535 (0: any free port) or off",
            ),
            (
                "telemetry_sample_interval",
                0.2 <= self.telemetry_sample_interval_s <= 3600,
                "0.2..3600 seconds",
            ),
            (
                "telemetry_batch_interval",
                1 <= self.telemetry_batch_interval_s <= 3600,
                "1..3600 seconds",
            ),
            (
                "telemetry_queue_max_bytes",
                self.telemetry_queue_max_bytes >= 64 * 1024,
                "at least 65536 bytes",
            ),
            ("telemetry_queue_max_rows", self.telemetry_queue_max_rows >= 1, "at least 1"),
            ("advertise_address", 0 < len(self.advertise_address) <= 255, "a host name or IP"),
            (
                "service_user",
                self.service_user is None or 0 < len(self.service_user) <= 32,
                "a user name",
            ),
            (
                "attestation_interval",
                self.attestation_interval_s == 0 or 1 <= self.attestation_interval_s <= 86400,
                "0 (off) or 1..86400 seconds",
            ),
            (
                "tpm",
                self.tpm is None or ":" in self.tpm,
                "a TCTI, e.g. device:/dev/tpmrm0 or swtpm:host=127.0.0.1,port=2321",
            ),
        ]
        for key, ok, expected in checks:
            if not ok:
                raise SettingsError(f"bad setting {key} (--{key.replace('_', '-')}): {expected}")

    def location(self) -> dict[str, str | float | None]:
        return {
            "region": self.region,
            "zone": self.zone,
            "timezone": self.timezone,
            "latitude": self.latitude,
            "longitude": self.longitude,
        }
