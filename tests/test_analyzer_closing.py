"""What the analyzer says at the end of an interrupted batch: which requests results.csv holds (beside the
collector's ok count), and the resume command with the batch's real path."""
from __future__ import annotations

from analyzer import cli
from shared.batch import resume_command
from shared.escape import md_inline
from tests import synth as S


def test_interrupted_batch_names_its_rows_and_the_real_resume_command(tmp_path, capsys):
    reqs = [S.Req(1.0, 2.0, run=1), S.Req(2.5, 3.0, run=2, ok=False), S.Req(3.5, 4.5, run=3, end=False)]
    root = tmp_path / "experiments 1"  # a space: the command is quoted
    S.write_batch(root, S.Spec(duration_s=5, requests=reqs, planned=4, interrupted=True))
    rc = cli.main(["--batch", str(root), "--no-quality", "--no-plots", "--no-progress"])
    out = capsys.readouterr().out
    assert rc == 0
    assert f"analysed 3 request(s) (1 ok, 1 failed, 1 incomplete) -> {root / 'summary' / 'results.csv'}" in out
    report = (root / "summary" / "report.md").read_text(encoding="utf-8")
    assert md_inline(f'`python -m collector --exp-dir "{root}" --resume` runs what is missing') in report
    assert "BATCH_DIR" not in report and resume_command(root) == f'python -m collector --exp-dir "{root}" --resume'


def test_analysed_line_counts_each_status_ok_first():
    rows = [{"status": s} for s in ("failed", "ok", "ok", "incomplete")]
    assert cli.analysed_line(rows) == "4 request(s) (2 ok, 1 failed, 1 incomplete)"
    assert cli.analysed_line([]) == "0 request(s)"
