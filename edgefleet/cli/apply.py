"""`edgefleet apply -f FILE`: create or update what YAML manifests declare;
`edgefleet diff -f FILE` (or `apply --diff`): what applying it would change.

A file may hold several documents (`---`); each is sent to the handler of its `kind` in
`HANDLERS`, in order, and the command stops at the first error. A capability adds its kind
by adding a handler: `(client, document, options) -> Applied`, and, where a document can be
updated, a reader of the stored one in `STORED`.

A diff asks the control plane for a dry run of each document (it decides, stores and audits
nothing), then shows a unified diff of the stored document and the new one as YAML for an
update, `created` for a new one (a rollout's devices and waves), nothing for an unchanged
one. Its exit status is kubectl diff's: 0 nothing would change, 1 something would, 2 error.
"""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import Any

import typer
import yaml
from rich.markup import escape

from edgefleet.cli.output import (
    Output,
    OutputOpt,
    console,
    emit_document,
    print_error,
    print_names,
)
from edgefleet.client import FleetClient
from edgefleet.errors import EdgefleetError, InvalidInput


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
    result: Mapping[str, Any] = field(default_factory=dict)


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
        detail += (
            f"; {len(plan['devices'])} device(s), {skipped} incompatible; {waves or 'no wave'}"
        )
    action = "created" if answer["created"] else "unchanged"
    return Applied("Rollout", rollout["name"], action, detail, answer)


def apply_release_train(client: FleetClient, doc: dict[str, Any], options: ApplyOptions) -> Applied:
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


def apply_role(client: FleetClient, doc: dict[str, Any], options: ApplyOptions) -> Applied:
    answer = client.apply_role(doc, dry_run=options.dry_run)
    role = answer["role"]
    return Applied("Role", role["name"], answer["outcome"], ", ".join(role["permissions"]),
                   answer)  # fmt: skip


def apply_training(client: FleetClient, doc: dict[str, Any], options: ApplyOptions) -> Applied:
    answer = client.apply_training(doc, dry_run=options.dry_run)
    action = "created" if answer["created"] else "unchanged"
    detail = f"{answer['rounds']} round(s), {answer['strategy']}, {answer['status']}"
    return Applied("FederatedTraining", answer["name"], action, detail, answer)


HANDLERS: dict[str, Handler] = {
    "Rollout": apply_rollout,
    "ReleaseTrain": apply_release_train,
    "Workload": apply_workload,
    "Policy": apply_policy,
    "Role": apply_role,
    "FederatedTraining": apply_training,
}

# The manifest the control plane holds under a name, for kinds an apply can update (a
# rollout is created or found identical, never updated).
STORED: dict[str, Callable[[FleetClient, str], dict[str, Any]]] = {
    "ReleaseTrain": lambda client, name: client.get_release_train(name)["manifest"],
    "Workload": lambda client, name: client.get_workload(name)["manifest"],
    "Policy": lambda client, name: next(
        p["manifest"] for p in client.list_policies() if p["name"] == name
    ),
}
# kubectl diff's exit statuses.
DIFF_UNCHANGED, DIFF_CHANGED, DIFF_FAILED = 0, 1, 2


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
        False,
        "--supersede",
        help="Rollouts: abort active rollouts holding the same devices and take them over",
    ),
    dry_run: bool = typer.Option(
        False,
        "--dry-run",
        help="Ask the control plane what each document would do (a "
        "rollout's devices and waves); nothing is stored or audited",
    ),
    diff: bool = typer.Option(
        False, "--diff", help="Show what would change instead, as `edgefleet diff` does"
    ),
    output: Output = OutputOpt,
) -> None:
    """Create or update what the manifests in a file declare (Rollout, ReleaseTrain, ...)."""
    if diff:
        show_diff(ctx, filename)
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


def diff(
    ctx: typer.Context,
    filename: str = typer.Option(
        ..., "--filename", "-f", help="YAML manifest file ('-' for stdin)"
    ),
) -> None:
    """Show what `apply -f` would change: a unified diff per updated document, `created`
    for new ones. Exit status 0: nothing would change, 1: something would, 2: an error.
    Nothing is stored or audited."""
    show_diff(ctx, filename)


def show_diff(ctx: typer.Context, filename: str) -> None:
    """Print the diff of every document of the file and exit with kubectl diff's status."""
    try:
        text = sys.stdin.read() if filename == "-" else _read(Path(filename))
        changed = False
        with ctx.obj.client() as client:
            for doc in read_documents(text, filename):
                lines = document_diff(client, doc)
                for line in lines:
                    console.print(escape(line), highlight=False, style=_diff_style(line))
                changed = changed or bool(lines)
    except EdgefleetError as e:
        print_error(e)
        raise typer.Exit(DIFF_FAILED) from None
    raise typer.Exit(DIFF_CHANGED if changed else DIFF_UNCHANGED)


def document_diff(client: FleetClient, doc: dict[str, Any]) -> list[str]:
    """The lines showing what applying `doc` would change (none: nothing would)."""
    applied = HANDLERS[doc["kind"]](client, doc, ApplyOptions(dry_run=True))
    label = f"{applied.kind.lower()}/{applied.name}"
    if applied.action == "created":
        return [f"{label} created" + (f" ({applied.detail})" if applied.detail else "")]
    if applied.action == "unchanged":
        return []
    stored = STORED[applied.kind](client, applied.name)
    return unified_yaml_diff(stored, doc, label)


def unified_yaml_diff(old: dict[str, Any], new: dict[str, Any], label: str) -> list[str]:
    """A unified diff of two documents as YAML (keys sorted), kubectl's way.

    >>> unified_yaml_diff({"a": 1}, {"a": 2}, "policy/p")[2:]
    ['@@ -1 +1 @@', '-a: 1', '+a: 2']
    """

    def lines(document: dict[str, Any]) -> list[str]:
        return yaml.safe_dump(document, sort_keys=True, allow_unicode=True).splitlines()

    return list(difflib.unified_diff(lines(old), lines(new), f"stored {label}",
                                     f"new {label}", lineterm=""))  # fmt: skip


def _diff_style(line: str) -> str | None:
    if line.startswith(("+++", "---")):
        return "bold"
    return {"+": "green", "-": "red", "@": "cyan"}.get(line[:1])


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as e:
        raise InvalidInput(f"cannot read {path}: {e.strerror}") from None
