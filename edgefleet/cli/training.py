"""`edgefleet training ...`: federated training jobs (start one with `edgefleet apply -f`)."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import typer

from edgefleet.cli.output import (
    Column,
    Output,
    OutputOpt,
    console,
    emit_document,
    emit_list,
    new_table,
)
from edgefleet.client import FleetClient

app = typer.Typer(
    help="Federated training: rounds, clients, accuracy, bytes.", no_args_is_help=True
)

FINAL = {"completed", "paused", "cancelled"}
JOB_COLUMNS = [
    Column("NAME", lambda j: j["name"], "cyan"),
    Column("STATUS", lambda j: j["status"]),
    Column("ROUNDS", lambda j: f"{j['rounds_done']}/{j['rounds']}"),
    Column("STEP", lambda j: _step(j)),
    Column("ACCURACY", lambda j: _accuracy(_last_done(j))),
    Column("BYTES/CLIENT", lambda j: _last_done(j).get("bytes_per_client", "-")),
    Column("REASON", lambda j: j["reason"] or "-"),
]


def _last_done(job: dict[str, Any]) -> dict[str, Any]:
    done = [h for h in job["history"] if h["outcome"] == "done"]
    return done[-1] if done else {}


def _accuracy(entry: dict[str, Any]) -> str:
    value = entry.get("accuracy")
    return "-" if value is None else f"{100 * value:.1f}%"


def _step(job: dict[str, Any]) -> str:
    current = job.get("current")
    if not current:
        return "-"
    return (
        f"round {current['round']} {current['phase']} "
        f"{len(current['answered'])}/{len(current['clients'])}"
    )


def _rounds_table(job: dict[str, Any]) -> Any:
    table = new_table()
    for header in (
        "ROUND",
        "OUTCOME",
        "CLIENTS",
        "MASKED",
        "DROPPED",
        "ACCURACY",
        "BYTES UP",
        "BYTES DOWN",
        "BYTES/CLIENT",
        "REASON",
    ):
        table.add_column(header)
    for h in job["history"]:
        table.add_row(
            str(h["round"]),
            h["outcome"],
            f"{h['keys']}/{h['planned']}",
            str(h["masked"]),
            str(len(h["dropped"])),
            _accuracy(h),
            str(h["bytes_up"]),
            str(h["bytes_down"]),
            str(h["bytes_per_client"]),
            h["reason"] or "-",
        )
    return table


def _show(jobs: list[dict[str, Any]], output: Output) -> None:
    emit_list(jobs, output, JOB_COLUMNS, name=lambda j: str(j["name"]))


@app.command("status")
def status(
    ctx: typer.Context,
    name: str | None = typer.Argument(None, help="One job (default: every job)"),
    watch: bool = typer.Option(
        False,
        "--watch",
        "-w",
        help="Look again until the job completes, pauses or is cancelled (with NAME)",
    ),
    interval: float = typer.Option(2.0, metavar="SECONDS", help="Seconds between looks"),
    output: Output = OutputOpt,
) -> None:
    """Each job's rounds, its current step (clients answered), the last round's accuracy
    (the mean of the clients' own test sets) and bytes per client."""
    with ctx.obj.client() as client:
        if not watch or name is None:
            _show(
                client.training_jobs() if name is None else [client.training_status(name)], output
            )
            return
        _watch(client, name, interval, output)


def _watch(client: FleetClient, name: str, interval: float, output: Output) -> None:
    last: dict[str, Any] = {}
    while True:
        job = client.training_status(name)
        if job != last:
            if output is Output.JSON:
                sys.stdout.write(json.dumps(job, sort_keys=True) + "\n")
                sys.stdout.flush()
            else:
                _show([job], output)
            last = job
        if job["status"] in FINAL:
            return
        time.sleep(max(0.2, interval))


@app.command("report")
def report(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
    """Every round of a job: clients, dropouts, accuracy, bytes; the privacy spent; and how
    to release the final model."""
    with ctx.obj.client() as client:
        job = client.training_report(name)
    if output.is_document:
        emit_document(job, output)
        return
    console.print(
        f"[bold]{job['name']}[/bold]: {job['status']}, "
        f"{job['rounds_done']}/{job['rounds']} rounds, {job['strategy']}"
    )
    console.print(_rounds_table(job))
    privacy = job.get("privacy")
    if privacy:
        spent, total = privacy["epsilon_so_far"], privacy["epsilon_at_end"]
        budget = (
            "no guarantee (no noise)"
            if total is None
            else f"epsilon {spent:.2f} so far, {total:.2f} after every round"
        )
        console.print(
            f"differential privacy: noise multiplier {privacy['noise_multiplier']}, "
            f"clip {privacy['clip_norm']}, delta {privacy['delta']:g}: {budget}"
        )
    final = job.get("final_artifact")
    if final:
        console.print(
            f"final model: artifact {final}. Release it and sign it as any model:\n"
            f"  edgefleet releases create {job['name']} --version 1 --artifact {final}\n"
            f"  edgefleet releases sign {job['name']}@1 --key targets.key"
        )


def _change(action: str) -> Any:
    def command(ctx: typer.Context, name: str, output: Output = OutputOpt) -> None:
        with ctx.obj.client() as client:
            _show([client.change_training(name, action)], output)

    command.__doc__ = f"{action.capitalize()} a training job."
    return command


for _action in ("pause", "resume", "cancel"):
    app.command(_action)(_change(_action))
