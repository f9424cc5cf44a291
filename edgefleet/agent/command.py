"""The `edgefleet agent` command: its flags, and the lean process that runs the agent.

`edgefleet agent ...` (the typer CLI) replaces itself with `python -m edgefleet.agent ...`
(same process id, same arguments), which parses the flags here and runs the agent. The
long-running process therefore never holds the operator CLI (typer, rich, click, and the
pydantic that typer brings: over 10 MB of a 70 MB idle agent). The flags are defined once,
in `build_parser`; `--help` is printed from there too.

This module imports only the standard library at import time; the agent itself is imported
when it starts.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from edgefleet.agent.hardware import Hardware
    from edgefleet.agent.settings import AgentSettings
    from edgefleet.errors import EdgefleetError
    from edgefleet.transport.messages import Transport

    # The seams a simulation wraps (sim/faulty_agent.py injects faults there).
    TransportSeam = Callable[[Transport], Transport]
    HardwareSeam = Callable[[Hardware], Hardware]

ENROLL_TOKEN_ENV = "EDGEFLEET_ENROLL_TOKEN"
ENROLL_TOKEN_FLAG = "--enroll-token"

DESCRIPTION = "Run the device agent: enroll, heartbeat, follow the desired state."
PROG = "edgefleet agent"


def _bounded_float(low: float, high: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{value} is not in the range {low}..{high}")
        return value

    return parse


def _log_level(text: str) -> str:
    from edgefleet.logfmt import check_level

    try:
        return check_level(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class _Parser(argparse.ArgumentParser):
    """argparse, with a usage error in one line like every other edgefleet command's."""

    def error(self, message: str) -> NoReturn:
        _print_line(message, f"usage; see {PROG} --help")
        sys.exit(2)


def _port_or_off(text: str) -> int | None:
    if text.strip().lower() == "off":
        return None
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number or 'off'") from None


def build_parser(environ: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The agent's flags. A flag with an environment variable takes its default from it (an
    empty variable counts as unset, as in the rest of the CLI)."""
    env = os.environ if environ is None else environ
    parser = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog="Proxies: HTTPS_PROXY / HTTP_PROXY (http:// URLs, user:password@ allowed) and "
        "NO_PROXY (hosts, domains, IPs, CIDR blocks, *) are honoured; loopback never uses one. "
        "Its systemd unit: `edgefleet agent install-service` (see its --help).",
        allow_abbrev=False,
    )

    def add(
        flag: str,
        metavar: str,
        help: str = "",
        *,
        type: Callable[[str], Any] = str,
        default: Any = None,
        envvar: str | None = None,
        required: bool = False,
        repeatable: bool = False,
        short: str | None = None,
    ) -> None:
        if default is not None:  # the built-in one: the variable's value may be a secret
            help = f"{help} [default: {default}]".strip()
        if envvar is not None:
            help = f"{help} [env: {envvar}]".strip()
            # Like a flag's value, a string default is converted (and checked) by `type`.
            default = env.get(envvar) or default
            required = required and default is None
        parser.add_argument(
            *([flag, short] if short else [flag]),
            metavar=metavar,
            help=help,
            type=type,
            default=[] if repeatable else default,
            required=required,
            action="append" if repeatable else "store",
        )

    add("--server", "URL", "Control plane URL", envvar="EDGEFLEET_SERVER", required=True)
    add("--data-dir", "DIR", "Key and state", envvar="EDGEFLEET_DATA_DIR", required=True)
    add("--ca-file", "PEM",
        "CA certificates to check an https control plane against [system trust store]",
        envvar="EDGEFLEET_CA_FILE")  # fmt: skip
    add("--mqtt", "URL",
        "MQTT device channel, mqtt[s]://HOST:PORT: reports and the pushed desired state go "
        "over it (credentials come from the control plane), enrollment and downloads stay "
        "on HTTP [HTTP only]", envvar="EDGEFLEET_MQTT")  # fmt: skip
    add("--mqtt-ca-file", "PEM", "CA certificates to check an mqtts:// broker against "
        "[system trust store]", envvar="EDGEFLEET_MQTT_CA_FILE")  # fmt: skip
    parser.add_argument(
        "--device-certificate",
        action="store_true",
        default=env.get("EDGEFLEET_DEVICE_CERTIFICATE", "") not in ("", "0", "false"),
        help="Keep a certificate of the fleet's device CA for the device key (renewed at 2/3 "
        "of its life) and present it to an https control plane [env: "
        "EDGEFLEET_DEVICE_CERTIFICATE]",
    )
    parser.add_argument(
        "--seal-telemetry",
        action="store_true",
        default=env.get("EDGEFLEET_SEAL_TELEMETRY", "") not in ("", "0", "false"),
        help="Upload telemetry only sealed to the control plane's ingest key; batches wait "
        "while it names none [env: EDGEFLEET_SEAL_TELEMETRY]",
    )
    add("--root-file", "PATH",
        "The fleet's TUF root (root.json), pinned out of band: enrollment is refused unless "
        "the control plane's root is this one or chains from it [the root it hands over]",
        envvar="EDGEFLEET_ROOT_FILE")  # fmt: skip
    add(ENROLL_TOKEN_FLAG, "TOKEN",
        "Needed only until the device is enrolled; the agent moves it off its command line "
        "at start", envvar=ENROLL_TOKEN_ENV)  # fmt: skip
    add("--name", "NAME", "Device name [host name]")
    add("--label", "K=V", "Label, repeatable (at enrollment)", short="-l", repeatable=True)
    add("--heartbeat-interval", "S", "Seconds between heartbeats", type=float, default=15.0)
    add("--region", "REGION", envvar="EDGEFLEET_REGION")
    add("--zone", "ZONE", envvar="EDGEFLEET_ZONE")
    add("--timezone", "TZ", "IANA zone name", envvar="EDGEFLEET_TIMEZONE")
    add("--latitude", "DEG", "-90..90", type=_bounded_float(-90, 90))
    add("--longitude", "DEG", "-180..180", type=_bounded_float(-180, 180))
    add("--accelerator", "KIND", "e.g. npu, gpu (repeatable)", repeatable=True)
    add("--max-backoff", "S", "Longest wait between retries, seconds", type=float, default=60.0)
    add("--sandbox-memory-limit", "MB",
        "Memory limit (MiB) of the sandboxed model check before an install",
        type=int, default=1024)  # fmt: skip
    add("--sandbox-timeout", "S", "Time limit (s) of the sandboxed check",
        type=float, default=60.0)  # fmt: skip
    add("--statsd-port", "PORT",
        "Loopback UDP port of the workloads' StatsD endpoint (0: any free port)",
        type=int, default=8125, envvar="EDGEFLEET_STATSD_PORT")  # fmt: skip
    add("--otlp-port", "PORT",
        "Loopback TCP port of the workloads' OTLP/HTTP metrics endpoint (0: any free port; "
        "off: none)", type=_port_or_off, default=4318, envvar="EDGEFLEET_OTLP_PORT")  # fmt: skip
    add("--telemetry-sample-interval", "S", "Seconds between host metric readings",
        type=float, default=10.0)  # fmt: skip
    add("--telemetry-batch-interval", "S",
        "Seconds between cutting closed windows into a queued batch",
        type=float, default=60.0)  # fmt: skip
    add("--telemetry-queue-max-bytes", "BYTES",
        "Bound of the on-disk telemetry queue (oldest dropped first)",
        type=int, default=16 * 1024 * 1024)  # fmt: skip
    add("--telemetry-queue-max-rows", "N", "Most batches the queue holds",
        type=int, default=10_000)  # fmt: skip
    add("--advertise-address", "HOST",
        "Host at which clients reach this device's workloads (published endpoints)",
        default="127.0.0.1", envvar="EDGEFLEET_ADVERTISE_ADDRESS")  # fmt: skip
    add("--simulated-battery", "START[:DRAIN]|file:PATH",
        "Tests and demos only: report a battery at START%%, draining DRAIN points per "
        "minute (e.g. 80:6), or at the percentage written in PATH (read at every report)",
        envvar="EDGEFLEET_SIMULATED_BATTERY")  # fmt: skip
    add("--service-user", "NAME",
        "User the release service and workloads run as when the agent runs as root "
        "('root' to keep them root) [edgefleet-svc if it exists]",
        envvar="EDGEFLEET_SERVICE_USER")  # fmt: skip
    add("--attestation-interval", "S",
        "Seconds between measuring this device's software state and reporting it (0: off)",
        type=float, default=600.0, envvar="EDGEFLEET_ATTESTATION_INTERVAL")  # fmt: skip
    add("--tpm", "TCTI",
        "Extend the measurement into PCR 16 of this TPM and answer the control plane's "
        "nonce with a quote (tpm2-tools), e.g. device:/dev/tpmrm0 [no TPM]",
        envvar="EDGEFLEET_TPM")  # fmt: skip
    add("--log-level", "LEVEL", "debug, info, warning or error", type=_log_level,
        default="info", envvar="EDGEFLEET_LOG_LEVEL")  # fmt: skip
    return parser


def without_enroll_token(
    argv: Sequence[str], environ: Mapping[str, str]
) -> tuple[list[str], dict[str, str]] | None:
    """`argv` and `environ` with --enroll-token's value moved into EDGEFLEET_ENROLL_TOKEN,
    or None when `argv` carries no token: a command line is readable by every user of the
    machine (/proc/PID/cmdline), the environment only by the process's own.

    >>> without_enroll_token(["--enroll-token=efe_x", "--name", "d1"], {})
    (['--name', 'd1'], {'EDGEFLEET_ENROLL_TOKEN': 'efe_x'})
    """
    kept: list[str] = []
    token: str | None = None
    words = iter(argv)
    for word in words:
        if word == "--":
            kept += [word, *words]
        elif word == ENROLL_TOKEN_FLAG:
            token = next(words, None)
            if token is None:
                kept.append(word)  # the parser reports the missing value
        elif word.startswith(ENROLL_TOKEN_FLAG + "="):
            token = word.removeprefix(ENROLL_TOKEN_FLAG + "=")
        else:
            kept.append(word)
    if token is None:
        return None
    return kept, {**environ, ENROLL_TOKEN_ENV: token}


def settings_from_args(
    args: argparse.Namespace, environ: Mapping[str, str] | None = None
) -> AgentSettings:
    """The agent's settings from parsed flags (and the proxy variables)."""
    import socket
    from pathlib import Path

    from edgefleet.agent.settings import AgentSettings
    from edgefleet.core.labels import parse_label_assignments
    from edgefleet.transport.http_proxy import ProxySettings

    env = os.environ if environ is None else environ
    proxies = ProxySettings.from_environ(env)
    return AgentSettings(
        server_url=args.server,
        data_dir=Path(args.data_dir),
        ca_file=Path(args.ca_file) if args.ca_file else None,
        mqtt_url=args.mqtt,
        mqtt_ca_file=Path(args.mqtt_ca_file) if args.mqtt_ca_file else None,
        root_file=Path(args.root_file) if args.root_file else None,
        device_certificate=args.device_certificate,
        seal_telemetry=args.seal_telemetry,
        proxies=proxies if proxies.configured else None,
        enroll_token=args.enroll_token,
        name=args.name or socket.gethostname(),
        labels=parse_label_assignments(args.label),
        heartbeat_interval_s=args.heartbeat_interval,
        max_backoff_s=args.max_backoff,
        region=args.region,
        zone=args.zone,
        timezone=args.timezone,
        latitude=args.latitude,
        longitude=args.longitude,
        accelerators=tuple(args.accelerator),
        sandbox_memory_limit_mb=args.sandbox_memory_limit,
        sandbox_timeout_s=args.sandbox_timeout,
        statsd_port=args.statsd_port,
        otlp_port=args.otlp_port,
        telemetry_sample_interval_s=args.telemetry_sample_interval,
        telemetry_batch_interval_s=args.telemetry_batch_interval,
        telemetry_queue_max_bytes=args.telemetry_queue_max_bytes,
        telemetry_queue_max_rows=args.telemetry_queue_max_rows,
        advertise_address=args.advertise_address,
        simulated_battery=args.simulated_battery,
        service_user=args.service_user,
        attestation_interval_s=args.attestation_interval,
        tpm=args.tpm,
    )


async def run_agent(
    settings: AgentSettings,
    *,
    transport_seam: TransportSeam | None = None,
    hardware_seam: HardwareSeam | None = None,
) -> None:
    """Run the agent on this machine until SIGINT or SIGTERM (its transport and hardware
    wrapped by the seams, when given)."""
    import asyncio
    import logging
    import signal

    from edgefleet.agent.agent import Agent
    from edgefleet.agent.certificates import CERTIFICATE_FILE
    from edgefleet.agent.hardware import HostHardware
    from edgefleet.agent.heap import trim_heap_forever
    from edgefleet.agent.process_runtime import HostRuntime, open_data_dir_to, resolve_service_user
    from edgefleet.agent.state import KEY_FILE
    from edgefleet.clock import SystemClock
    from edgefleet.errors import SettingsError
    from edgefleet.transport.http import HttpTransport
    from edgefleet.transport.http_client import ClientCertificate

    try:
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SettingsError(f"data dir {settings.data_dir} is not usable (--data-dir or "
                            f"EDGEFLEET_DATA_DIR): {e.strerror}") from e  # fmt: skip
    service_user = resolve_service_user(settings.service_user, os.geteuid())
    log = logging.getLogger("edgefleet.agent")
    if service_user is not None:
        open_data_dir_to(service_user, settings.data_dir)
        log.info("services run as", extra={"user": service_user.name, "uid": service_user.uid})
    elif os.geteuid() == 0 and settings.service_user is None:
        log.warning("services run as root: create the user edgefleet-svc or pass "
                    "--service-user (EDGEFLEET_SERVICE_USER)")  # fmt: skip
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    trimmer = asyncio.create_task(trim_heap_forever())
    if settings.proxies is not None:
        log.info("using forward proxies", extra=settings.proxies.describe())
    client_certificate = None
    if settings.device_certificate:
        client_certificate = ClientCertificate(settings.data_dir / CERTIFICATE_FILE,
                                               settings.data_dir / KEY_FILE)  # fmt: skip
    transport: Transport = HttpTransport(
        settings.server_url,
        ca_file=settings.ca_file,
        proxies=settings.proxies,
        client_certificate=client_certificate,
    )
    hardware: Hardware = HostHardware(settings.data_dir, list(settings.accelerators))
    agent = Agent(
        settings,
        clock=SystemClock(),
        transport=transport if transport_seam is None else transport_seam(transport),
        client_certificate=client_certificate,
        hardware=hardware if hardware_seam is None else hardware_seam(hardware),
        runtime=HostRuntime(service_user=service_user),
    )
    try:
        await agent.run(stop)
    finally:
        trimmer.cancel()


def _print_line(message: str, code: str) -> None:
    """One line on stderr, as every other edgefleet command prints errors."""
    red, dim, reset = ("\x1b[31m", "\x1b[2m", "\x1b[0m") if _color(sys.stderr) else ("",) * 3
    print(f"{red}error:{reset} {message} {dim}({code}){reset}", file=sys.stderr)


def _print_error(error: EdgefleetError) -> None:
    _print_line(error.message, error.code)


def _color(stream: object) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty()) and "NO_COLOR" not in os.environ


def main(
    argv: Sequence[str] | None = None,
    *,
    transport_seam: TransportSeam | None = None,
    hardware_seam: HardwareSeam | None = None,
) -> None:
    """`python -m edgefleet.agent [flags]`: parse, run, and exit 1 with one line on an
    edgefleet error (2 for usage errors, 130 on Ctrl-C).

    Started with the enrollment token on its command line, the process first replaces
    itself (same process id) with one that gets it in its environment instead. Once read,
    the token leaves the environment, so no process the agent starts inherits it."""
    if argv is None:
        handed_over = without_enroll_token(sys.argv[1:], os.environ)
        if handed_over is not None:
            # The interpreter and its options, then `-m edgefleet.agent` (or the script).
            start = sys.orig_argv[: len(sys.orig_argv) - len(sys.argv) + 1]
            os.execve(sys.executable, [*start, *handed_over[0]], handed_over[1])
    args = build_parser().parse_args(argv)
    os.environ.pop(ENROLL_TOKEN_ENV, None)
    import asyncio

    from edgefleet.errors import EdgefleetError
    from edgefleet.logfmt import configure

    configure(args.log_level)
    try:
        settings = settings_from_args(args)
        asyncio.run(run_agent(settings, transport_seam=transport_seam,
                              hardware_seam=hardware_seam))  # fmt: skip
    except EdgefleetError as e:
        _print_error(e)
        sys.exit(1)
    except ModuleNotFoundError as e:  # an install without the `agent` extra
        from edgefleet.extras import missing_dependency

        missing = missing_dependency(e, PROG, prefer="agent")
        if missing is None:
            raise
        _print_error(missing)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
