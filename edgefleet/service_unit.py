"""systemd units for the agent and the control plane: `edgefleet agent|server install-service`.

The units ship in the package (edgefleet/packaging/systemd/), complete and hardened, for a
system-wide install. install-service fits one to the install it runs from and writes it:

- `ExecStart=`: this interpreter (a venv's `bin/python` is enough to find its packages),
  running the agent's lean process (`-OO -m edgefleet.agent`) or `-m edgefleet.cli server`;
- the data dir: `StateDirectory=` when it is under /var/lib (systemd creates it and owns it
  to the service's user), else `ReadWritePaths=` on a directory that must exist;
- `EnvironmentFile=`: the settings and secrets (enrollment token, admin token, database
  password), created 0600 with commented examples when absent, never overwritten;
- the agent's services' user (`EDGEFLEET_SERVICE_USER`), or `DynamicUser=yes`.

Paths the unit's sandbox hides (ProtectHome=, PrivateTmp=) are refused, since the service
could not start from them.
"""

from __future__ import annotations

import argparse
import os
import pwd
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from edgefleet.atomicfile import write_atomically
from edgefleet.errors import SettingsError

Role = Literal["agent", "server"]

UNIT_DIR = Path("/etc/systemd/system")
STATE_ROOT = Path("/var/lib")
# Hidden from the service by ProtectHome=yes and PrivateTmp=yes.
HIDDEN_ROOTS = (Path("/home"), Path("/root"), Path("/run/user"), Path("/tmp"), Path("/var/tmp"))
# What a unit line carries without quoting or escaping (% and $ are systemd specifiers).
_PLAIN = re.compile(r"[A-Za-z0-9_./@+:,=-]+")

DEFAULT_DATA_DIR: dict[Role, Path] = {
    "agent": Path("/var/lib/edgefleet-agent"),
    "server": Path("/var/lib/edgefleet"),
}
DEFAULT_SERVICE_USER = "edgefleet-svc"
ENV_FILE_EXAMPLES: dict[Role, str] = {
    "agent": """\
# Settings of the edgefleet agent (edgefleet agent --help). Root's, mode 0600: it holds the
# enrollment token, which never goes on a command line.
#EDGEFLEET_SERVER=https://fleet.example
#EDGEFLEET_ENROLL_TOKEN=efe_...
#EDGEFLEET_REGION=eu-central
#EDGEFLEET_ZONE=berlin-1
#EDGEFLEET_TIMEZONE=Europe/Berlin
#EDGEFLEET_ROOT_FILE=/etc/edgefleet/root.json
""",
    "server": """\
# Settings of the edgefleet control plane (docs/operator-guide.md). Root's, mode 0600: it
# holds the first admin token and the database password.
#EDGEFLEET_ADMIN_TOKEN=...
#EDGEFLEET_DATABASE_URL=postgresql+psycopg://edgefleet:PASSWORD@db.example/edgefleet
#EDGEFLEET_HOST=0.0.0.0
#EDGEFLEET_PORT=8080
""",
}


@dataclass(frozen=True)
class UnitSpec:
    """What fits a shipped unit to one install. `service_user` is the agent's services'
    user; None with `dynamic_user` (and always for the server, which has one of its own)."""

    role: Role
    python: Path
    data_dir: Path
    env_file: Path
    service_user: str | None = None
    dynamic_user: bool = False


def unit_name(role: Role) -> str:
    return f"edgefleet-{role}.service"


def shipped_unit(role: Role) -> str:
    """The unit as the package ships it."""
    return (resources.files("edgefleet") / "packaging" / "systemd" / unit_name(role)).read_text()


def replace_directive(unit: str, key: str, lines: Sequence[str]) -> str:
    """`unit` with its one `KEY=` line replaced by `lines` (none: removed).

    >>> replace_directive("[Service]\\nDynamicUser=no\\n", "DynamicUser", ["DynamicUser=yes"])
    '[Service]\\nDynamicUser=yes\\n'
    """
    found = [i for i, line in enumerate(unit.splitlines()) if line.startswith(f"{key}=")]
    if len(found) != 1:
        raise ValueError(f"the unit has {len(found)} {key}= lines, not one")
    kept = unit.splitlines(keepends=True)
    return "".join([*kept[: found[0]], *(f"{line}\n" for line in lines), *kept[found[0] + 1 :]])


def render_unit(template: str, spec: UnitSpec) -> str:
    """The shipped unit `template` fitted to `spec` (paths checked by `check_spec`)."""
    if spec.role == "agent":
        command = f"{spec.python} -OO -m edgefleet.agent --data-dir {spec.data_dir}"
    else:
        command = f"{spec.python} -m edgefleet.cli server --data-dir {spec.data_dir}"
    unit = replace_directive(template, "ExecStart", [f"ExecStart={command}"])
    unit = replace_directive(unit, "EnvironmentFile", [f"EnvironmentFile={spec.env_file}"])
    if spec.data_dir.is_relative_to(STATE_ROOT):
        state = spec.data_dir.relative_to(STATE_ROOT)
        unit = replace_directive(unit, "StateDirectory", [f"StateDirectory={state}"])
    else:
        unit = replace_directive(unit, "StateDirectory", [f"ReadWritePaths={spec.data_dir}"])
        unit = replace_directive(unit, "StateDirectoryMode", [])
    if spec.role == "agent":
        user = [f"Environment=EDGEFLEET_SERVICE_USER={spec.service_user}"]
        unit = replace_directive(unit, "Environment", user if spec.service_user else [])
        unit = replace_directive(unit, "DynamicUser", [f"DynamicUser={_yes_no(spec.dynamic_user)}"])
    return unit


def check_spec(spec: UnitSpec) -> None:
    """Raise SettingsError, naming the option, for a unit that could not start."""
    paths = [("--data-dir", spec.data_dir), ("--env-file", spec.env_file),
             ("this install's interpreter", spec.python)]  # fmt: skip
    for what, path in paths:
        if not path.is_absolute():
            raise SettingsError(f"{what} must be an absolute path, not {path}")
        if not _PLAIN.fullmatch(str(path)):
            raise SettingsError(f"{what}: a unit line cannot carry {str(path)!r} unquoted: "
                                "use a path of letters, digits and ._-/@+:,=")  # fmt: skip
    # The environment file is read by systemd itself, outside the sandbox.
    for what, path in (paths[0], paths[2]):
        hidden = next((root for root in HIDDEN_ROOTS if path.is_relative_to(root)), None)
        if hidden is not None:
            raise SettingsError(f"{what} {path} is under {hidden}, which the unit's sandbox "
                                "hides from the service (ProtectHome=, PrivateTmp=): use a "
                                "data dir under /var/lib and a venv under /opt, for "
                                "example")  # fmt: skip
    if not spec.data_dir.is_relative_to(STATE_ROOT):
        if spec.dynamic_user:
            raise SettingsError("--dynamic-user needs a --data-dir under /var/lib (systemd "
                                "creates it for the transient user)")  # fmt: skip
        if not spec.data_dir.is_dir():
            raise SettingsError(f"--data-dir {spec.data_dir} does not exist: create it "
                                f"(mkdir -m 0700 {spec.data_dir}) or choose one under "
                                "/var/lib, which systemd creates")  # fmt: skip
    if spec.service_user is not None:
        if not _PLAIN.fullmatch(spec.service_user):
            raise SettingsError(f"--service-user {spec.service_user!r} is not a user name")
        try:
            pwd.getpwnam(spec.service_user)
        except KeyError:
            raise SettingsError(
                f"--service-user: no user {spec.service_user} on this machine: create it "
                f"(useradd --system --no-create-home --shell /usr/sbin/nologin "
                f"{spec.service_user}), or choose another, or --dynamic-user"
            ) from None


def install_unit(spec: UnitSpec, dest: Path) -> list[str]:
    """Write the unit into `dest`, and the environment file when absent; returns what was
    done and what is left to do, one line each."""
    check_spec(spec)
    unit_path = dest / unit_name(spec.role)
    dest.mkdir(parents=True, exist_ok=True)
    write_atomically(unit_path, render_unit(shipped_unit(spec.role), spec).encode(), mode=0o644)
    done = [f"wrote {unit_path}"]
    if spec.env_file.exists():
        done.append(f"kept {spec.env_file} as it is")
    else:
        spec.env_file.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(spec.env_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as env:
            env.write(ENV_FILE_EXAMPLES[spec.role])
        done.append(f"wrote {spec.env_file} (mode 0600): set your values in it")
    done.append(f"then: systemctl daemon-reload && systemctl enable --now "
                f"{unit_name(spec.role)}")  # fmt: skip
    return done


def build_parser(role: Role) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=f"edgefleet {role} install-service",
        description=f"Write the systemd unit of the {role} for this install "
        f"({unit_name(role)}), hardened, with its secrets in an environment file.",
        allow_abbrev=False,
    )
    parser.add_argument("--dest", type=Path, default=UNIT_DIR, metavar="DIR",
                        help=f"Where to write the unit [{UNIT_DIR}]")  # fmt: skip
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR[role], metavar="DIR",
                        help=f"The {role}'s data dir [{DEFAULT_DATA_DIR[role]}]")  # fmt: skip
    parser.add_argument("--env-file", type=Path, default=Path(f"/etc/edgefleet/{role}.env"),
                        metavar="PATH", help="Settings and secrets, created 0600 when absent "
                        f"[/etc/edgefleet/{role}.env]")  # fmt: skip
    if role == "agent":
        who = parser.add_mutually_exclusive_group()
        who.add_argument("--service-user", default=DEFAULT_SERVICE_USER, metavar="NAME",
                         help="User the release service and workloads run as; the agent "
                         f"runs as root [{DEFAULT_SERVICE_USER}]")  # fmt: skip
        who.add_argument("--dynamic-user", action="store_true",
                         help="Run the agent and its services as one transient unprivileged "
                         "user (DynamicUser=yes): services can read the device key")  # fmt: skip
    return parser


def main(role: Role, argv: Sequence[str]) -> None:
    """`edgefleet agent|server install-service ARGV`: exit 1 with one line on a bad option."""
    args = build_parser(role).parse_args(argv)
    dynamic = role == "agent" and args.dynamic_user
    spec = UnitSpec(
        role=role,
        python=Path(sys.executable),
        data_dir=args.data_dir,
        env_file=args.env_file,
        service_user=args.service_user if role == "agent" and not dynamic else None,
        dynamic_user=dynamic,
    )
    try:
        done = install_unit(spec, args.dest)
    except SettingsError as e:
        print(f"error: {e.message} ({e.code})", file=sys.stderr)
        sys.exit(1)
    except OSError as e:
        print(f"error: cannot write {e.filename}: {e.strerror} (os_error)", file=sys.stderr)
        sys.exit(1)
    print("\n".join(done))


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"
