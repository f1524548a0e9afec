"""Intel/AMD RAPL energy counters from a Linux powercap tree (``/sys/class/powercap``).

Each zone directory holding ``energy_uj`` is one counter (package, core, dram, ...). The raw
counter wraps at ``max_energy_range_uj``; :class:`Unwrapper` turns it into a cumulative count.
Since Linux 5.10 ``energy_uj`` is readable by root only: unreadable zones are skipped and
reported once, never published as zero. Windows and macOS have no powercap tree: no RAPL there.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_ROOT = Path("/sys/class/powercap")


class Unwrapper:
    """Cumulative µJ from a counter that wraps to 0 after ``max_range_uj``. Pure."""

    def __init__(self, max_range_uj: int):
        if max_range_uj <= 0:
            raise ValueError(f"max_energy_range_uj must be positive, got {max_range_uj}")
        self.max_range_uj = max_range_uj
        self._last_raw: int | None = None
        self.total_uj = 0
        self.wraps = 0

    def update(self, raw_uj: int) -> int:
        """Feed one raw reading; return the cumulative µJ (the first reading is the base)."""
        if self._last_raw is None:
            self.total_uj = raw_uj
        else:
            delta = raw_uj - self._last_raw
            if delta < 0:  # wrapped (at most once between two reads at our rates)
                delta += self.max_range_uj
                self.wraps += 1
            self.total_uj += delta
        self._last_raw = raw_uj
        return self.total_uj


@dataclass
class Zone:
    key: str          # published name, e.g. "intel-rapl:0/package-0"
    energy_file: Path
    unwrapper: Unwrapper = field(repr=False)


def _read_int(path: Path) -> int:
    return int(path.read_text(encoding="ascii").strip())


def discover(root: Path = DEFAULT_ROOT) -> tuple[list[Zone], list[str]]:
    """Readable zones under ``root`` and a list of problems (unreadable or malformed zones)."""
    zones: list[Zone] = []
    problems: list[str] = []
    if not root.is_dir():
        return zones, [f"{root} does not exist (no powercap/RAPL on this system)"]
    for zdir in sorted(p for p in root.iterdir() if (p / "energy_uj").exists()):
        try:
            name = (zdir / "name").read_text(encoding="utf-8").strip() if (zdir / "name").exists() else zdir.name
            max_range = _read_int(zdir / "max_energy_range_uj")
            _read_int(zdir / "energy_uj")
        except PermissionError:
            problems.append(f"{zdir / 'energy_uj'}: permission denied (root only since Linux 5.10; "
                            "run the daemon as root or grant read access to energy_uj)")
            continue
        except (OSError, ValueError) as exc:
            problems.append(f"{zdir}: unreadable RAPL zone ({exc}); expected integer energy_uj and max_energy_range_uj")
            continue
        zones.append(Zone(f"{zdir.name}/{name}", zdir / "energy_uj", Unwrapper(max_range)))
    return zones, problems


class RaplReader:
    """Reads every readable zone; ``read()`` returns ``{zone: cumulative µJ}`` (empty if none)."""

    def __init__(self, root: Path = DEFAULT_ROOT):
        self.root = Path(root)
        self.zones, self.problems = discover(self.root)

    def read(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for zone in self.zones:
            try:
                raw = _read_int(zone.energy_file)
            except (OSError, ValueError):
                continue  # absent this tick, never a fake value
            out[zone.key] = zone.unwrapper.update(raw)
        return out
