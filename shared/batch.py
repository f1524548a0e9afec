"""The batch directory layout (as in the seed), in one place for the collector and the analyzer.

    data/experiments_{index}_{start_time}/
      config.json  test_cases.json  config.py
      raw/stream.msgpack  raw/<rid>.json
      texts/<rid>.txt
      summary/results.csv  summary/stats.csv
      plots/
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

def _index_re(prefix: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(prefix)}_(\d+)(?:_|$)")


def resume_command(batch_root: Path | str) -> str:
    """The command that continues a batch with its own saved settings (quoted where the path has spaces)."""
    root = str(batch_root)
    return f'python -m collector --exp-dir "{root}" --resume' if " " in root else \
        f"python -m collector --exp-dir {root} --resume"


@dataclass(frozen=True)
class BatchDir:
    root: Path

    @property
    def config_json(self) -> Path:
        return self.root / "config.json"

    @property
    def test_cases(self) -> Path:
        return self.root / "test_cases.json"

    @property
    def config_py(self) -> Path:
        return self.root / "config.py"

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    @property
    def stream(self) -> Path:
        return self.raw / "stream.msgpack"

    @property
    def texts(self) -> Path:
        return self.root / "texts"

    @property
    def summary(self) -> Path:
        return self.root / "summary"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def request_json(self, rid: str) -> Path:
        return self.raw / f"{safe_name(rid)}.json"

    def text_file(self, rid: str) -> Path:
        return self.texts / f"{safe_name(rid)}.txt"

    def make(self) -> "BatchDir":
        for d in (self.root, self.raw, self.texts, self.summary, self.plots):
            d.mkdir(parents=True, exist_ok=True)
        return self


def safe_name(rid: str) -> str:
    """A request id as a file name that is legal on Windows too (model tags contain ':' and '/')."""
    return re.sub(r'[<>:"/\\|?*\s]+', "_", rid)


def new_batch_dir(out: str | Path, start: float | None = None, prefix: str = "experiments") -> BatchDir:
    """``out/{prefix}_{index}_{YYYYmmdd_HHMMSS}``, index one past the highest already there
    (``experiments`` for the collector's batches, ``proxy`` for the measuring proxy's).
    Only names it: ``BatchDir.make()`` creates it (a dry run creates nothing)."""
    out = Path(out)
    index_re = _index_re(prefix)
    indices = [int(m.group(1)) for p in out.iterdir() if (m := index_re.match(p.name))] if out.is_dir() else []
    stamp = time.strftime("%Y%m%d_%H%M%S", time.localtime(start if start is not None else time.time()))
    return BatchDir(out / f"{prefix}_{max(indices, default=0) + 1}_{stamp}")
