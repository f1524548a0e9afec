"""results.csv open in Excel on Windows: os.replace onto it raises PermissionError. The analyzer writes
every other output, puts the new results beside the locked file, names both and the fix, and exits 3
without a traceback. (os.replace is made to fail for that one path: Windows' lock cannot happen here.)"""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from analyzer import cli, outputs

TINY = Path(__file__).resolve().parent / "data" / "analyzer_batch"


@pytest.fixture
def batch(tmp_path) -> Path:
    dst = tmp_path / "experiments_1_20260101_000000"
    shutil.copytree(TINY, dst)
    return dst


def lock(monkeypatch, *names: str) -> list[Path]:
    """os.replace onto any of ``names`` fails as Windows fails it for a file Excel has open."""
    real, refused = os.replace, []

    def replace(src, dst, *a, **k):
        if Path(dst).name in names:
            refused.append(Path(dst))
            raise PermissionError(13, "The process cannot access the file because it is being used by another process",
                                  str(dst))
        return real(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", replace)
    return refused


def test_a_locked_results_csv_keeps_its_old_version_and_the_rest_is_written(batch, monkeypatch, capsys):
    summary = batch / "summary"
    summary.mkdir(exist_ok=True)
    (summary / "results.csv").write_text("old,locked\n", encoding="utf-8")
    refused = lock(monkeypatch, "results.csv")
    rc = cli.main(["--batch", str(batch), "--no-quality", "--no-plots", "--no-progress"])
    out, err = capsys.readouterr()
    assert rc == cli.EXIT_OUTPUT_LOCKED and refused == [summary / "results.csv"]
    assert "Traceback" not in err + out
    assert f"{summary / 'results.csv'} is open in another program, so the new version is {summary / 'results.new.csv'}" in err
    assert "Close it" in err and f"python -m analyzer --batch {batch}" in err
    assert (summary / "results.csv").read_text(encoding="utf-8") == "old,locked\n"  # untouched
    new = (summary / "results.new.csv").read_text(encoding="utf-8-sig").splitlines()
    assert "rid" in new[0].split(",") and len(new) > 1
    for name in ("stats.csv", "pareto.csv", "report.html", "report.md", "results.parquet"):
        assert (summary / name).is_file(), name
    assert not list(summary.glob("*.tmp"))


def test_outside_the_analysis_a_permission_error_is_not_hidden(tmp_path, monkeypatch):
    """Only write_all turns a locked file into a note; any other writer still gets the real error."""
    lock(monkeypatch, "x.csv")
    with pytest.raises(PermissionError):
        outputs.write_text(tmp_path / "x.csv", "a\n")


def test_the_file_beside_locked_too_keeps_the_temporary_name(batch, monkeypatch):
    from analyzer import pipeline, stream
    from shared.batch import BatchDir
    from shared.recording import read_recording

    _h, items, _p = read_recording(batch / "raw" / "stream.msgpack")
    a = pipeline.analyze(stream.build(items), pipeline.Options(quality=False, progress=False))
    lock(monkeypatch, "stats.csv", "stats.new.csv")
    with pytest.raises(outputs.OutputsLocked) as exc:
        outputs.write_all(a, BatchDir(batch), make_plots=False)
    assert exc.value.locked == [(batch / "summary" / "stats.csv", batch / "summary" / "stats.csv.tmp")]
    assert (batch / "summary" / "stats.csv.tmp").is_file() and (batch / "summary" / "report.md").is_file()


def test_a_locked_sample_table_gets_its_new_version_beside_it(batch, monkeypatch, capsys):
    """The sample tables (written a piece at a time) take the same way round a locked file."""
    raw = batch / "raw"
    refused = lock(monkeypatch, "samples_gpu.parquet")
    rc = cli.main(["--batch", str(batch), "--no-quality", "--no-plots", "--no-progress"])
    _out, err = capsys.readouterr()
    assert rc == cli.EXIT_OUTPUT_LOCKED and refused == [raw / "samples_gpu.parquet"]
    assert f"so the new version is {raw / 'samples_gpu.new.parquet'}" in err
    assert (raw / "samples_gpu.new.parquet").is_file() and (raw / "samples_host.parquet").is_file()
    assert not list(raw.glob("*.tmp"))
