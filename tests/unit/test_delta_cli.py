"""`edgefleet delta create|apply|info` on plain files, as an operator runs them."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from typer.testing import CliRunner

from edgefleet.cli.delta import app
from edgefleet.errors import InvalidInput

runner = CliRunner()


def _files(tmp_path: Path) -> tuple[Path, Path]:
    old, new = tmp_path / "old.txt", tmp_path / "new.txt"
    old.write_bytes(b"".join(b"line %d\n" % i for i in range(5000)))
    new.write_bytes(old.read_bytes().replace(b"line 2500\n", b"line 2500 changed\n"))
    return old, new


def test_create_then_apply_rebuilds_the_new_file(tmp_path: Path) -> None:
    old, new = _files(tmp_path)
    patch, out = tmp_path / "p.efd", tmp_path / "rebuilt.txt"
    created = runner.invoke(app, ["create", str(old), str(new), "-o", str(patch)])
    assert created.exit_code == 0, created.output
    assert "of the target" in created.output
    digest = hashlib.sha256(new.read_bytes()).hexdigest()
    args = ["apply", str(old), str(patch), "-o", str(out), "--expect-sha256", digest]
    applied = runner.invoke(app, [*args, "--format", "json"])
    assert applied.exit_code == 0, applied.output
    assert out.read_bytes() == new.read_bytes()
    report = json.loads(applied.output)
    assert report["target_sha256"] == digest
    assert report["delta_size"] < new.stat().st_size / 100


def test_apply_refuses_a_hash_other_than_the_expected_one(tmp_path: Path) -> None:
    old, new = _files(tmp_path)
    patch, out = tmp_path / "p.efd", tmp_path / "rebuilt.txt"
    runner.invoke(app, ["create", str(old), str(new), "-o", str(patch), "--fast"])
    result = runner.invoke(
        app, ["apply", str(old), str(patch), "-o", str(out), "--expect-sha256", "1" * 64]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, InvalidInput)
    assert result.exception.code == "delta_target_mismatch"
    assert not out.exists()


def test_info_describes_a_delta(tmp_path: Path) -> None:
    old, new = _files(tmp_path)
    patch = tmp_path / "p.efd"
    runner.invoke(app, ["create", str(old), str(new), "-o", str(patch)])
    result = runner.invoke(app, ["info", str(patch), "--format", "json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["base_size"] == old.stat().st_size
