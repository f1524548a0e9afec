"""RAPL reader on a fake powercap tree in tmp_path (the real sysfs needs Intel/AMD and root)."""
from __future__ import annotations

from pathlib import Path

import pytest

from telemetry.host import HostReader
from telemetry.rapl import RaplReader, Unwrapper, discover


def make_zone(root: Path, dirname: str, name: str, energy_uj: int, max_uj: int = 262_143_328_850) -> Path:
    zdir = root / dirname
    zdir.mkdir(parents=True)
    (zdir / "name").write_text(name + "\n")
    (zdir / "energy_uj").write_text(f"{energy_uj}\n")
    (zdir / "max_energy_range_uj").write_text(f"{max_uj}\n")
    return zdir


def set_energy(zdir: Path, energy_uj: int) -> None:
    (zdir / "energy_uj").write_text(f"{energy_uj}\n")


class TestUnwrapper:
    def test_counts_through_a_wrap(self):
        """A reading below the previous one means the counter wrapped at max_energy_range_uj."""
        u = Unwrapper(max_range_uj=1000)
        assert [u.update(v) for v in (900, 980, 30, 100)] == [900, 980, 1030, 1100]
        assert u.wraps == 1

    def test_rejects_non_positive_range(self):
        with pytest.raises(ValueError, match="max_energy_range_uj"):
            Unwrapper(0)


class TestRaplReader:
    def test_reads_every_zone_with_cumulative_microjoules(self, tmp_path):
        """Each zone is published as 'dir/name' with its cumulative µJ."""
        pkg = make_zone(tmp_path, "intel-rapl:0", "package-0", 5_000)
        make_zone(tmp_path, "intel-rapl:0:0", "core", 1_000)
        (tmp_path / "unrelated").mkdir()
        reader = RaplReader(tmp_path)
        assert reader.read() == {"intel-rapl:0/package-0": 5_000, "intel-rapl:0:0/core": 1_000}
        set_energy(pkg, 8_000)
        assert reader.read()["intel-rapl:0/package-0"] == 8_000

    def test_wrap_in_the_tree_keeps_counting_up(self, tmp_path):
        """A wrapped sysfs counter still gives a monotonic cumulative value."""
        z = make_zone(tmp_path, "intel-rapl:0", "package-0", 9_900, max_uj=10_000)
        reader = RaplReader(tmp_path)
        assert reader.read() == {"intel-rapl:0/package-0": 9_900}
        set_energy(z, 200)
        assert reader.read() == {"intel-rapl:0/package-0": 10_200}

    def test_malformed_zone_is_reported_and_skipped(self, tmp_path):
        """A zone with garbage in its files is named in problems, never published as 0."""
        make_zone(tmp_path, "intel-rapl:0", "package-0", 10)
        bad = make_zone(tmp_path, "intel-rapl:1", "package-1", 10)
        (bad / "max_energy_range_uj").write_text("not a number\n")
        reader = RaplReader(tmp_path)
        assert list(reader.read()) == ["intel-rapl:0/package-0"]
        assert len(reader.problems) == 1 and "intel-rapl:1" in reader.problems[0]

    def test_zone_that_vanishes_is_absent_for_that_tick(self, tmp_path):
        z = make_zone(tmp_path, "intel-rapl:0", "package-0", 10)
        reader = RaplReader(tmp_path)
        (z / "energy_uj").unlink()
        assert reader.read() == {}

    def test_missing_root_gives_no_zones_and_a_problem(self, tmp_path):
        zones, problems = discover(tmp_path / "nope")
        assert zones == [] and "does not exist" in problems[0]


class TestHostReaderWithRapl:
    def test_host_body_carries_rapl_and_psutil_fields(self, tmp_path):
        """tel.host has CPU/memory/counters from psutil and rapl_uj from the (fake) tree."""
        make_zone(tmp_path, "intel-rapl:0", "package-0", 42)
        body = HostReader(watch=(), rapl_root=tmp_path).read()
        assert body["rapl_uj"] == {"intel-rapl:0/package-0": 42}
        assert 0.0 <= body["cpu_pct"] <= 100.0
        assert isinstance(body["cpu_pct_per_core"], list) and body["cpu_pct_per_core"]
        assert body["mem_total_mib"] > body["mem_used_mib"] > 0

    def test_no_rapl_means_key_absent(self, tmp_path):
        body = HostReader(watch=(), rapl_root=tmp_path / "missing").read()
        assert "rapl_uj" not in body
