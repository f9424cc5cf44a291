"""`edgefleet apply -f FILE`: create or update what YAML manifests declare.

A file may hold several documents (`---`); each is sent to the handler of its `kind` in
`HANDLERS`, in order, and the command stops at the first error. A capability adds its kind
by adding a handler: `(client, document, options) -> Applied`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.markup import escape

from edgefleet.cli.output import Output, OutputOpt, console, emit_document, print_names
from edgefleet.client import FleetClient
from edgefleet.errors import InvalidInput


@dataclass(frozen=True)
class ApplyOptions:
    supersede: bool = False  # Rollout: take over devices other active rollouts hold
    dry_run: bool = False  # the control plane decides, stores nothing


@dataclass(frozen=True)
class Applied:
    kind: str
    name: str
    action: str  # created | updated | unchanged
    detail: str = ""
    result: dict[str, Any] = field(default_factory=dict)


Handler = Callable[[FleetClient, dict[str, Any], ApplyOptions], Applied]


def apply_rollout(client: FleetClient, doc: dict[str, Any], options: ApplyOptions) -> Applied:
    answer = client.create_rollout(doc, supersede=options.supersede, dry_run=options.dry_run)
    rollout = answer["rollout"]
    detail = f"{rollout['release']}, {rollout['state']}"
    if not options.dry_run:
        detail = f"{rollout['id']}, {detail}"
    if answer["superseded"]:
        detail += f"; superseded {', '.join(answer['superseded'])}"
    plan = answer.get("plan")
    if plan is not None:
        waves = "; ".join(f"wave {w['index'] + 1} ({w['label']}): {', '.join(w['devices'])}"
                          for w in plan["waves"])  # fmt: skip
        skipped = sum(not d["compatible"] for d in plan["devices"])
        detail += (f"; {len(plan['devices'])} device(s), {skipped} incompatible; "
                   f"{waves or 'no wave'}")
    action = "created" if answer["created"] else "unchanged"
    return Applied("Rollout", rollout["name"], action, detail, answer)


def apply_release_train(
    client: FleetClient, doc: dict[str, Any], options: ApplyOptions
) -> Applied:
    answer = client.apply_release_train(doc, dry_run=options.dry_run)
    train = answer["train"]
    detail = f"{len(train['releases'])} release(s), {train['state']}: {train['reason']}"
    return Applied("ReleaseTrain", train["name"], answer["action"], detail, answer)


def apply_workload(client: FleetClient, doc: dict[str, Any], options: ApplyOptions) -> Applied:
    answer = client.apply_workload(doc, dry_run=options.dry_run)
    detail = f"{answer['replicas']} replica(s), releases {', '.join(answer['releases']) or '-'}"
    return Applied("Workload", answer["name"], answer["outcome"], detail, answer)


def apply_policy(client: FleetClient, doc: dict[str, Any], options: ApplyOptions) -> Applied:
    answer = client.apply_policy(doc, dry_run=options.dry_run)
    policy = answer["policy"]
    return Applied("Policy", policy["name"], answer["outcome"], f"by {policy['updated_by']}",
                   answer)  # fmt: skip


HANDLERS: dict[str, Handler] = {
    "Rollout": apply_rollout,
    "ReleaseTrain": apply_release_train,
    "Workload": apply_workload,
    "Policy": apply_policy,
}


def plain_data(value: Any) -> Any:
    """YAML data as JSON data: times (an unquoted `2026-07-01T00:00:00Z`) become ISO text."""
    if isinstance(value, dict):
        return {str(k): plain_data(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_data(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat().replace("+00:00", "Z")
    return value


def read_documents(text: str, source: str) -> list[dict[str, Any]]:
    """The manifests in a YAML text, each a mapping with a supported `kind`."""
    try:
        loaded = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as e:
        raise InvalidInput(f"{source}: not valid YAML: {e}") from None
    if not loaded:
        raise InvalidInput(f"{source}: no document")
    documents = []
    for i, doc in enumerate(loaded, start=1):
        if not isinstance(doc, dict):
            raise InvalidInput(f"{source}: document {i} is not a mapping")
        kind = doc.get("kind")
        if kind not in HANDLERS:
            raise InvalidInput(
                f"{source}: document {i}: kind {kind!r} is not supported "
                f"(one of {', '.join(sorted(HANDLERS))})"
            )
        documents.append(plain_data(doc))
    return documents


def apply(
    ctx: typer.Context,
    filename: str = typer.Option(
        ..., "--filename", "-f", help="YAML manifest file ('-' for stdin)"
    ),
    supersede: bool = typer.Option(
        False, "--supersede",
        help="Rollouts: abort active rollouts holding the same devices and take them over",
    ),
    dry_run: bool = typer.Option(
        False, "--dry-run", help="Ask the control plane what each document would do (a "
        "rollout's devices and waves); nothing is stored or audited"
    ),
    output: Output = OutputOpt,
) -> None:
    """Create or update what the manifests in a file declare (Rollout, ReleaseTrain, ...)."""
    text = sys.stdin.read() if filename == "-" else _read(Path(filename))
    documents = read_documents(text, filename)
    options = ApplyOptions(supersede=supersede, dry_run=dry_run)
    results = []
    with ctx.obj.client() as client:
        for doc in documents:
            applied = HANDLERS[doc["kind"]](client, doc, options)
            results.append(applied)
            if output is Output.NAME:
                print_names([f"{applied.kind.lower()}/{applied.name}"])
            elif not output.is_document:
                would = " (dry run)" if dry_run else ""
                console.print(
                    f"{applied.kind.lower()}/{applied.name} [bold]{applied.action}[/bold]{would}"
                    + (f" ({escape(applied.detail)})" if applied.detail else ""),
                    highlight=False,
                )
    if output.is_document:
        emit_document([
            {"kind": a.kind, "name": a.name, "action": a.action, "result": a.result}
            for a in results
        ], output)  # fmt: skip


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
