"""Agent-side pieces of workload migration: the state directory archived and restored
byte for byte, archives with a wrong hash or escaping paths refused, and the simulated
battery used by tests and demos."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from edgefleet.agent.node_status import NodeStatus, SimulatedBattery
from edgefleet.agent.workload_state import archive_state, restore_state, sha256_of
from edgefleet.clock import SystemClock
from edgefleet.errors import InvalidInput, SettingsError


def test_a_state_directory_survives_archive_and_restore(tmp_path: Path) -> None:
    source = tmp_path / "source"
    (source / "nested").mkdir(parents=True)
    (source / "counter.json").write_text('{"requests": 5}')
    (source / "nested" / "blob.bin").write_bytes(bytes(range(256)) * 10)
    sha, size = archive_state(source, tmp_path / "state.tar.gz")
    assert size == (tmp_path / "state.tar.gz").stat().st_size and sha256_of(
        tmp_path / "state.tar.gz") == sha  # fmt: skip
    target = tmp_path / "target"
    target.mkdir()
    (target / "stale.txt").write_text("from an earlier life")
    restore_state(tmp_path / "state.tar.gz", sha, target)
    assert (target / "counter.json").read_text() == '{"requests": 5}'
    assert (target / "nested" / "blob.bin").read_bytes() == bytes(range(256)) * 10
    assert not (target / "stale.txt").exists()  # replaced as a whole


def test_a_wrong_hash_is_refused_and_the_directory_left_alone(tmp_path: Path) -> None:
    sha, _ = archive_state(tmp_path / "empty", tmp_path / "state.tar.gz")
    target = tmp_path / "target"
    target.mkdir()
    (target / "keep.txt").write_text("mine")
    with pytest.raises(InvalidInput, match="does not match") as refused:
        restore_state(tmp_path / "state.tar.gz", "0" * 64, target)
    assert refused.value.code == "hash_mismatch"
    assert (target / "keep.txt").read_text() == "mine" and sha != "0" * 64


def test_an_archive_escaping_its_directory_is_refused(tmp_path: Path) -> None:
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"owned"
        info = tarfile.TarInfo("../outside.txt")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    target = tmp_path / "deep" / "target"
    target.mkdir(parents=True)
    with pytest.raises(InvalidInput, match="refused"):
        restore_state(evil, sha256_of(evil), target)
    assert not (tmp_path / "deep" / "outside.txt").exists()


def test_the_simulated_battery_drains_or_follows_a_file(tmp_path: Path) -> None:
    battery = SimulatedBattery.parse("80:6")
    assert battery.level_pct(0) == 80 and battery.level_pct(300) == 50
    assert battery.level_pct(3600) == 0
    level = tmp_path / "level"
    level.write_text("42.5\n")
    assert SimulatedBattery.parse(f"file:{level}").level_pct(0) == 42.5
    level.write_text("garbage")
    assert SimulatedBattery.parse(f"file:{level}").level_pct(0) is None
    for bad in ("full", "120", "50:-1"):
        with pytest.raises(SettingsError, match="simulated_battery"):
            SimulatedBattery.parse(bad)


def test_the_node_section_of_a_heartbeat(tmp_path: Path) -> None:
    level = tmp_path / "level"
    level.write_text("33")
    report = NodeStatus(SystemClock(), "10.1.2.3", f"file:{level}").report(scheduled=False)
    assert (report.address, report.scheduled) == ("10.1.2.3", False)
    assert (report.power_source, report.battery_pct) == ("battery", 33.0)
    assert report.cpu_load is None or report.cpu_load >= 0
