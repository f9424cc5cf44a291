"""`edgefleet lab rehearse`: a rollout rehearsed on a virtual copy of the fleet, in
accelerated simulated time, with the control plane's own decision engine; `edgefleet lab
predictive`: the predictive controllers against today's static policies."""

from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path

import typer

from edgefleet.cli.output import console
from edgefleet.errors import InvalidInput, SettingsError

app = typer.Typer(help="Rehearse changes on a virtual copy of the fleet.", no_args_is_help=True)


def _start(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise InvalidInput(f"--start: expected an ISO 8601 time, got {text!r}") from None
    if moment.utcoffset() is None:
        raise InvalidInput("--start: give a time zone, e.g. 2026-03-02T08:00:00Z")
    return moment


@app.command("rehearse")
def rehearse(
    ctx: typer.Context,
    rollout: Path = typer.Option(..., "--rollout", "-f", help="Rollout manifest (YAML)"),
    fleet_from: str = typer.Option(None, "--fleet-from", help="Copy the fleet of this server"),
    token: str = typer.Option(None, "--token", help="API token for --fleet-from [global]"),
    profile: str = typer.Option(
        None,
        "--profile",
        "-p",
        help="Fleet profile (file or shipped name); with --fleet-from "
        "it only adds its bad model, faults and workloads",
    ),
    devices: int = typer.Option(1000, "--devices", "-n", min=1, help="Fleet size (--profile)"),
    selector: str = typer.Option(None, "--selector", "-l", help="Copy only these devices"),
    since: str = typer.Option("24h", help="Telemetry period copied with --fleet-from"),
    hours: float = typer.Option(24.0, min=0.01, max=24 * 366, help="Simulated hours"),
    seed: int = typer.Option(None, help="Seed [the profile's, else 1]"),
    start: str = typer.Option(
        None, help="Simulated start (ISO 8601) [now: when the fleet was copied or drawn]"
    ),
    bad_release: bool = typer.Option(
        False, "--bad-release", help="Rehearse as if the release were bad (blast radius)"
    ),
    rollout_id: str = typer.Option(None, help="Rollout id for wave planning [its name]"),
    current_release: str = typer.Option(
        None, help="Release the profile's devices run before (--profile) [none]"
    ),
    controller_interval: float = typer.Option(
        None,
        min=0.1,
        help="Simulated seconds between two controller decisions at most [1 s up to 1000 "
        "devices, as the server reacts to each report; 15 s above, for speed]",
    ),
    output: Path = typer.Option(
        None, "--output", "-o", help="Write the report: .md for Markdown, .json for JSON"
    ),
    save: bool = typer.Option(
        False,
        "--save",
        help="Store the report on the server (--fleet-from, else the configured "
        "one) under the rollout's name: the dashboard's Lab view sets it next to the real "
        "rollout (needs rollouts.write)",
    ),
) -> None:
    """Play a rollout on a virtual fleet, on a simulated clock, and predict its timeline,
    gate outcomes, skipped devices, blast radius and failovers."""
    from edgefleet.client import FleetClient
    from edgefleet.sim.lab.report import build_report, render_markdown
    from edgefleet.sim.lab.scenario import load_rollout, scenario_from_profile, scenario_from_server

    if fleet_from is None and profile is None:
        raise SettingsError("lab rehearse needs --fleet-from URL or --profile FILE")
    spec, _ = load_rollout(rollout)
    api_token = token
    if fleet_from is not None:
        if api_token is None and ctx.obj is not None:
            # The configured token goes only to the server it belongs to, never to another
            # URL given with --fleet-from (pass --token for that one).
            with contextlib.suppress(SettingsError):  # no server configured: no token
                server, configured = ctx.obj.resolved()
                if server.rstrip("/") == fleet_from.rstrip("/"):
                    api_token = configured
        with FleetClient(fleet_from, api_token) as client:
            scenario = scenario_from_server(spec, client, rollout_id, selector, since, profile)
    else:
        scenario = scenario_from_profile(spec, profile, devices, seed, rollout_id,
                                         current_release)  # fmt: skip
    chosen_seed = seed if seed is not None else (scenario.profile.seed if scenario.profile
                                                 else 1)  # fmt: skip
    with console.status(f"rehearsing {spec.release} on {len(scenario.devices)} devices, "
                        f"{hours:g} simulated hours"):  # fmt: skip
        rehearsal = scenario.rehearsal(
            start=_start(start), hours=hours, seed=chosen_seed, bad_release=bad_release,
            controller_interval_s=controller_interval,
        ).run()  # fmt: skip
    report = build_report(rehearsal)
    markdown = render_markdown(report)
    if output is None:
        console.print(markdown, markup=False, highlight=False)
    else:
        if output.suffix == ".json":
            output.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
        else:
            output.write_text(markdown)
        outcome = report["outcome"]
        perf = report["performance"]
        console.print(f"{outcome['state']}: {outcome['reason']}", markup=False)
        console.print(f"report written to {output} ({perf['wall_s']} s for {hours:g} simulated "
                      f"hours)")  # fmt: skip
    if save:
        uploader = FleetClient(fleet_from, api_token) if fleet_from is not None \
            else ctx.obj.client()  # fmt: skip
        with uploader as client:
            saved = client.save_rehearsal(spec.rollout_name, report)
        console.print(f"rehearsal saved as {saved['id']} for rollout {saved['rollout']} "
                      "(dashboard: Lab)", markup=False)  # fmt: skip


@app.command("predictive")
def predictive(
    profile: list[str] = typer.Option(
        ..., "--profile", "-p", help="Fleet profile (file or shipped name), repeatable"
    ),
    devices: int = typer.Option(100, "--devices", "-n", min=2, help="Devices per profile"),
    seed: int = typer.Option(None, help="Seed [each profile's own]"),
    quick: bool = typer.Option(False, "--quick", help="Fewer devices, starts and events"),
    output: Path = typer.Option(
        None, "--output", "-o", help="Write the results: .md for Markdown, .json for JSON"
    ),
) -> None:
    """Evaluate the predictive controllers (window: predicted, forecast migration targets,
    telemetry fidelity) against today's static policies on fleet profiles, same seeds."""
    from edgefleet.sim.lab.predictive import PredictiveConfig, run_predictive
    from edgefleet.sim.lab.predictive_report import render_markdown, verdicts
    from edgefleet.sim.profile import load_profile

    results = []
    for name in profile:
        config = PredictiveConfig(load_profile(name), devices=devices, seed=seed)
        if quick:
            config = config.quick()
        with console.status(f"evaluating {config.profile.name} ({config.devices} devices)"):
            results.append(run_predictive(config))
    markdown = render_markdown(results)
    if output is None:
        console.print(markdown, markup=False, highlight=False)
    elif output.suffix == ".json":
        document = {"results": results, "verdicts": verdicts(results)}
        output.write_text(json.dumps(document, indent=2, sort_keys=True) + "\n")
    else:
        output.write_text(markdown)
