"""`make demo`: the edgefleet showcase on the embedded defaults (SQLite, HTTP).

Starts a control plane on a free port with a temporary data dir, three real agent
processes with different labels, and walks through the operator's day with the real CLI.
Everything is stopped cleanly at the end, on error, and on Ctrl-C.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.rule import Rule

from edgefleet.localfleet import EDGEFLEET, AgentProcess, ServerProcess, wait_for

console = Console()

FLEET = {
    "cam-berlin-1": {"region": "eu", "site": "berlin", "kind": "camera"},
    "gw-berlin-1": {"region": "eu", "site": "berlin", "kind": "gateway"},
    "kiosk-austin-1": {"region": "us", "site": "austin", "kind": "kiosk"},
}


class Demo:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server = ServerProcess(workdir / "server", admin_token=secrets.token_urlsafe(24))
        self.agents: list[AgentProcess] = []

    def cli(self, *args: str, show: bool = True) -> str:
        """Run the real `edgefleet` command and show what an operator would see."""
        env = {
            **os.environ,
            "EDGEFLEET_SERVER": self.server.url,
            "EDGEFLEET_TOKEN": self.server.admin_token,
            "COLUMNS": str(max(120, shutil.get_terminal_size().columns)),
        }
        if show:
            console.print(f"[bold cyan]$ edgefleet {' '.join(args)}[/bold cyan]")
        result = subprocess.run([*EDGEFLEET, *args], capture_output=True, text=True, env=env)
        if result.returncode != 0:
            raise RuntimeError(f"edgefleet {' '.join(args)} failed: {result.stderr.strip()}")
        if show:
            sys.stdout.write(result.stdout)
            sys.stdout.flush()
        return result.stdout

    def step(self, title: str) -> None:
        console.print()
        console.print(Rule(f"[bold]{title}"))

    def wait(self, condition: Callable[[], object], what: str, timeout_s: float = 30) -> None:
        with console.status(f"waiting for {what}..."):
            wait_for(condition, timeout_s=timeout_s, what=what)

    def run(self) -> None:
        self.step("1. Start a control plane (SQLite, HTTP) on a free port")
        self.server.start()
        console.print(f"control plane at [green]{self.server.url}[/green], "
                      f"data in {self.server.data_dir}")

        self.step("2. Create an enrollment token; devices enrolled with it wait for approval")
        token = json.loads(self.cli("enrollment-tokens", "create", "--expires", "1h",
                                    "--description", "demo fleet", "-o", "json", show=False))
        console.print(f"enrollment token {token['id']} (secret shown once, passed to agents)")

        self.step("3. Start three real agents with different labels")
        for name, labels in FLEET.items():
            agent = AgentProcess(
                self.server.url, self.workdir / name, token["token"], name, labels,
                heartbeat_interval_s=2, max_backoff_s=2, log_level="info",
            )
            agent.start()
            self.agents.append(agent)
            console.print(f"started agent {name} with labels {labels}")
        with self.server.client() as client:
            self.wait(lambda: len(client.list_devices(enrollment="pending")) == 3,
                      "three pending devices")
            self.cli("devices", "list")

            self.step("4. Approve them; they start heartbeating and follow desired state")
            self.cli("devices", "approve", *FLEET)
            self.wait(
                lambda: all(d["status"] == "online" and d["in_sync"]
                            for d in client.list_devices()),
                "all devices online and in sync",
            )
            self.cli("devices", "list")

            self.step("5. Select by labels; relabel a device (reaches it via long poll)")
            self.cli("devices", "list", "-l", "region=eu,kind in (camera,gateway)")
            self.cli("devices", "label", "cam-berlin-1", "canary=true")
            self.wait(lambda: client.get_device("cam-berlin-1")["in_sync"],
                      "the camera to apply its new labels")
            self.cli("devices", "list", "-l", "canary")

            self.step("6. Least privilege: a viewer cannot approve")
            viewer = json.loads(self.cli("tokens", "create", "auditor", "--role", "viewer",
                                         "-o", "json", show=False))
            console.print("[bold cyan]$ edgefleet --token <viewer> devices revoke "
                          "kiosk-austin-1[/bold cyan]")
            refused = subprocess.run(
                [*EDGEFLEET, "--server", self.server.url, "--token", viewer["token"],
                 "devices", "revoke", "kiosk-austin-1"],
                capture_output=True, text=True,
            )
            sys.stdout.write(refused.stderr)
            console.print(f"(exit status {refused.returncode})")

            self.step("7. Every change is in the hash-chained audit log")
            self.cli("audit", "list", "--limit", "6")
            self.cli("audit", "verify")
        self.step("Done: all devices online; stopping everything")

    def stop(self) -> None:
        for agent in self.agents:
            agent.stop()
        self.server.stop()


def main() -> int:
    workdir = Path(tempfile.mkdtemp(prefix="edgefleet-demo-"))
    demo = Demo(workdir)
    try:
        demo.run()
        return 0
    except KeyboardInterrupt:
        console.print("\n[yellow]interrupted; stopping the fleet[/yellow]")
        return 130
    except Exception as e:
        console.print(f"[red]demo failed:[/red] {e}")
        console.print(f"logs kept in {workdir}")
        return 1
    finally:
        demo.stop()
        if "EDGEFLEET_DEMO_KEEP" not in os.environ:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
