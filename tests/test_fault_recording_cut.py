"""Fault: a recording cut at every byte offset of its last object (the writer killed mid-write),
seen by the analyzer. The reader's side (every complete message, the cut reported) is
tests/test_recording.py::TestTruncation::test_cut_at_every_byte_of_last_object_yields_all_complete.

Here the last object is the last request's ``req.end``: at every cut the analyzer completes, keeps
every request that ended, lists the cut request as ``incomplete`` and reports the cut. The pure
analysis runs in-process for every offset; ``python -m analyzer --batch`` runs as a subprocess
at the first, middle and last offsets.
"""
import msgpack
import pytest

from analyzer import pipeline, stream
from shared.messages import REQ_END
from shared.recording import RecordingWriter, read_recording
from tests import synth
from tests.fault_helpers import analyzer, read_csv

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)

LAST_RID = "cut/m1/2/short/0"


def _messages() -> list:
    spec = synth.Spec(duration_s=3.0, rate_hz=20.0, batch_end=False, requests=[
        synth.Req(0.2, 0.9, run=0, rid="cut/m1/0/short/0"),
        synth.Req(1.0, 1.7, run=1, rid="cut/m1/1/short/0"),
        synth.Req(1.8, 2.6, run=2, rid=LAST_RID)], batch_id="cut")
    items = synth.messages(spec)
    # the writer was killed while writing the last req.end: make it the file's last object
    last = next(i for i, (t, p) in enumerate(items) if t == REQ_END and p["rid"] == LAST_RID)
    return items[:last] + items[last + 1:] + [items[last]]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """(bytes of the complete recording, offset where the last object starts, message count)."""
    path = tmp_path_factory.mktemp("whole") / "raw" / "stream.msgpack"
    items = _messages()
    with RecordingWriter(path, meta={"batch": "cut"}) as w:
        for topic, payload in items:
            w.write(topic, payload)
    data = path.read_bytes()
    last_len = len(msgpack.packb(list(items[-1]), use_bin_type=True))
    assert msgpack.unpackb(data[len(data) - last_len:], raw=False)[1]["rid"] == LAST_RID
    return data, len(data) - last_len, len(items)


def _cut_batch(root, data: bytes, n: int):
    raw = root / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    (raw / "stream.msgpack").write_bytes(data[:n])
    return root


def test_every_cut_of_the_last_req_end_is_analysed_with_the_request_incomplete(whole, tmp_path):
    data, start, count = whole
    for cut in range(start, len(data)):
        path = _cut_batch(tmp_path, data, cut) / "raw" / "stream.msgpack"
        _, items, problem = read_recording(path)
        assert len(items) == count - 1, cut
        assert (problem is None) == (cut == start), (cut, problem)  # a cut on a boundary is a clean file
        analysis = pipeline.analyze(stream.build(items), pipeline.Options(quality=False), recording_problem=problem)
        status = {r["rid"]: r["status"] for r in analysis.results}
        assert status == {"cut/m1/0/short/0": "ok", "cut/m1/1/short/0": "ok", LAST_RID: "incomplete"}, cut
        assert any("never ended" in p and LAST_RID in p for p in analysis.problems)
        if cut > start:
            assert any(p.startswith("recording:") and "truncated" in p for p in analysis.problems)
        done = {r["rid"]: r for r in analysis.results if r["status"] == "ok"}
        assert all(r["gpu_energy_j"] > 0 for r in done.values())  # what ended keeps its figures


@pytest.mark.parametrize("where", ["first_byte", "middle", "last_byte_missing"])
def test_analyzer_cli_on_a_cut_recording_completes_and_reports_incomplete(whole, tmp_path, where):
    data, start, _ = whole
    cut = {"first_byte": start + 1, "middle": (start + len(data)) // 2, "last_byte_missing": len(data) - 1}[where]
    batch = _cut_batch(tmp_path / "b", data, cut)
    r = analyzer(batch)
    assert r.returncode == 0, r.stderr
    rows = {row["rid"]: row for row in read_csv(batch / "summary" / "results.csv")}
    assert rows[LAST_RID]["status"] == "incomplete" and "req.start without req.end" in rows[LAST_RID]["error"]
    assert [rows[k]["status"] for k in sorted(rows) if k != LAST_RID] == ["ok", "ok"]
    report = (batch / "summary" / "report.md").read_text(encoding="utf-8")
    assert "truncated tail" in report and "never ended" in report
    assert "recording_cut" in r.stderr  # the reader's warning names the cut
