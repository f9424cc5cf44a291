"""The agent's flags (edgefleet.agent.command): environment fallbacks, checks, settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgefleet.agent.command import build_parser, settings_from_args, without_enroll_token
from edgefleet.agent.process_runtime import ServiceUser, resolve_service_user
from edgefleet.agent.settings import AgentSettings
from edgefleet.errors import SettingsError

REQUIRED = ["--server", "http://cp:8080", "--data-dir", "/var/lib/edgefleet", "--name", "d1"]


def settings(argv: list[str], env: dict[str, str] | None = None) -> AgentSettings:
    return settings_from_args(build_parser(env or {}).parse_args(argv), env or {})


def test_flag_defaults_are_the_settings_defaults() -> None:
    assert settings(REQUIRED) == AgentSettings(
        server_url="http://cp:8080", data_dir=Path("/var/lib/edgefleet"), name="d1"
    )


def test_every_flag_reaches_the_settings() -> None:
    got = settings([
        *REQUIRED, "--enroll-token", "efe_x", "-l", "site=berlin", "--label", "tier=edge",
        "--heartbeat-interval", "5", "--region", "eu", "--zone", "eu-1", "--timezone",
        "Europe/Berlin", "--latitude", "-33.9", "--longitude=151.2", "--accelerator", "npu",
        "--accelerator", "gpu", "--max-backoff", "30", "--sandbox-memory-limit", "256",
        "--sandbox-timeout", "20", "--statsd-port", "0", "--telemetry-sample-interval", "1",
        "--telemetry-batch-interval", "2", "--telemetry-queue-max-bytes", "65536",
        "--telemetry-queue-max-rows", "7", "--advertise-address", "10.0.0.5",
        "--simulated-battery", "80:6", "--otlp-port", "0",
    ])  # fmt: skip
    assert got == AgentSettings(
        server_url="http://cp:8080", data_dir=Path("/var/lib/edgefleet"), name="d1",
        enroll_token="efe_x", labels={"site": "berlin", "tier": "edge"},
        heartbeat_interval_s=5.0, region="eu", zone="eu-1", timezone="Europe/Berlin",
        latitude=-33.9, longitude=151.2, accelerators=("npu", "gpu"), max_backoff_s=30.0,
        sandbox_memory_limit_mb=256, sandbox_timeout_s=20.0, statsd_port=0, otlp_port=0,
        telemetry_sample_interval_s=1.0, telemetry_batch_interval_s=2.0,
        telemetry_queue_max_bytes=65536, telemetry_queue_max_rows=7,
        advertise_address="10.0.0.5", simulated_battery="80:6",
    )  # fmt: skip


def test_environment_fills_in_flags_and_an_empty_variable_is_unset() -> None:
    env = {
        "EDGEFLEET_SERVER": "http://from-env:1", "EDGEFLEET_DATA_DIR": "/d",
        "EDGEFLEET_STATSD_PORT": "9125", "EDGEFLEET_REGION": "", "EDGEFLEET_OTLP_PORT": "off",
    }  # fmt: skip
    got = settings(["--name", "d1"], env)
    assert (got.server_url, got.data_dir) == ("http://from-env:1", Path("/d"))
    assert (got.statsd_port, got.otlp_port, got.region) == (9125, None, None)
    # Faults are the simulator's (sim/faulty_agent.py): the agent's settings ignore them.
    faults = {"EDGEFLEET_FAULT_KILL_AT": "staged", "EDGEFLEET_FAULT_HEARTBEAT_LOSS": "0.25"}
    assert settings(["--name", "d1"], {**env, **faults}) == got
    assert settings([*REQUIRED], env).server_url == "http://cp:8080"  # the flag wins


@pytest.mark.parametrize(
    "argv",
    [
        [],  # --server and --data-dir are required
        [*REQUIRED, "--latitude", "91"],
        [*REQUIRED, "--longitude", "east"],
        [*REQUIRED, "--statsd-port", "x"],
        [*REQUIRED, "--otlp-port", "on"],
        [*REQUIRED, "--heartbeat", "5"],  # no abbreviations, as in the rest of the CLI
    ],
)
def test_bad_flags_are_usage_errors(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser({}).parse_args(argv)
    assert exit_.value.code == 2


def test_a_bad_environment_value_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser({"EDGEFLEET_STATSD_PORT": "eighty"}).parse_args(REQUIRED)
    assert exit_.value.code == 2


def test_a_ca_file_reaches_the_settings_and_a_missing_one_is_refused(tmp_path: Path) -> None:
    ca = tmp_path / "fleet-ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    assert settings([*REQUIRED, "--ca-file", str(ca)]).ca_file == ca
    assert settings(REQUIRED, {"EDGEFLEET_CA_FILE": str(ca)}).ca_file == ca
    with pytest.raises(SettingsError, match=r"ca_file .* is not a file"):
        settings([*REQUIRED, "--ca-file", str(tmp_path / "missing.pem")])


def test_the_installed_version_of_a_package_is_read_from_its_metadata() -> None:
    from importlib import metadata

    from edgefleet.agent.hardware import _package_version

    for name in ("onnxruntime", "PyYAML", "msgpack"):
        assert _package_version(name) == metadata.version(name)
    assert _package_version("no-such-package-here") is None


def test_the_heap_is_trimmed_where_the_c_library_can() -> None:
    import platform

    from edgefleet.agent.heap import trim_heap

    assert trim_heap() is (platform.libc_ver()[0] == "glibc")


def test_proxy_variables_reach_the_settings() -> None:
    got = settings(REQUIRED, {"HTTPS_PROXY": "http://proxy:3128", "NO_PROXY": ".lan"})
    assert got.proxies is not None and got.proxies.https is not None
    assert got.proxies.https.origin.authority == "proxy:3128"
    with pytest.raises(SettingsError, match="bad proxy in HTTPS_PROXY"):
        settings(REQUIRED, {"HTTPS_PROXY": "ftp://proxy"})


def test_the_service_user_comes_from_the_flag_or_the_environment() -> None:
    assert settings([*REQUIRED, "--service-user", "svc"]).service_user == "svc"
    assert settings(REQUIRED, {"EDGEFLEET_SERVICE_USER": "env-svc"}).service_user == "env-svc"
    assert settings(REQUIRED).service_user is None


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--enroll-token", "efe_x", "--name", "d1"], (["--name", "d1"], "efe_x")),
        (["-l", "a=b", "--enroll-token=efe_y"], (["-l", "a=b"], "efe_y")),
        (["--", "--enroll-token", "efe_z"], None),  # not a flag after --
        (["--name", "d1"], None),
        (["--enroll-token"], None),  # no value: left for the parser to refuse
    ],
)
def test_the_enrollment_token_moves_off_the_command_line(
    argv: list[str], expected: tuple[list[str], str] | None
) -> None:
    moved = without_enroll_token(argv, {"PATH": "/bin"})
    if expected is None:
        assert moved is None
        return
    assert moved is not None
    args, env = moved
    assert (args, env) == (expected[0], {"PATH": "/bin", "EDGEFLEET_ENROLL_TOKEN": expected[1]})
    assert build_parser(env).parse_args([*REQUIRED, *args]).enroll_token == expected[1]


def test_who_services_run_as() -> None:
    root = ServiceUser.named("root")
    assert (root.uid, root.environment()["USER"]) == (0, "root")
    # Named explicitly: that user, or nobody else's when it is the agent's own.
    assert resolve_service_user("root", euid=0) is None
    with pytest.raises(SettingsError, match="no user 'no-such-user-here'"):
        resolve_service_user("no-such-user-here", euid=0)
    with pytest.raises(SettingsError, match="needs the agent to run as root"):
        resolve_service_user("root", euid=12345)
    # Not named: as the agent's own user unless it is root (then edgefleet-svc, if present).
    assert resolve_service_user(None, euid=12345) is None
    default = resolve_service_user(None, euid=0)
    assert default is None or default.name == "edgefleet-svc"


@pytest.mark.parametrize("name", ["cam\u202e1", " cam-1", "cam\x1b[2J"])
def test_a_name_the_control_plane_would_refuse_stops_the_agent_at_start(name: str) -> None:
    """An agent with such a name would retry its refused enrollment forever."""
    with pytest.raises(SettingsError, match=r"bad setting name \(--name\): invalid device name"):
        settings([*REQUIRED, "--name", name])
