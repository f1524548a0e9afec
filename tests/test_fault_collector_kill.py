"""Fault: the collector is killed with SIGKILL in the middle of a request, then resumed.

Real processes: the Ollama stub (slowed so a request takes ~0.6 s), ``python -m collector`` killed
mid-stream, ``python -m collector --resume`` and the analyzer it runs. The recording-level check
(every ok req.end exactly once) is also in tests/test_collector_cli.py::test_kill9_then_resume_loses_nothing;
this test adds the kill *during* a request and the final CSVs.
"""
import json
from collections import Counter

import pytest

from shared.batch import BatchDir
from shared.messages import REQ_END, REQ_START
from shared.recording import read_recording
from tests.fault_helpers import loopback, procs, read_csv, recorded, start_ollama_stub, wait_for  # noqa: F401

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)

PLANNED = 2 * 4  # tasks x runs


def test_kill9_mid_request_then_resume_gives_every_request_once_in_the_csvs(procs, tmp_path):
    url = start_ollama_stub(procs, token_delay_s=0.05)
    batch = tmp_path / "b"
    batch.mkdir()
    stream = batch / "raw" / "stream.msgpack"
    args = ["collector", "--exp-dir", str(batch), "--models", "ok", "--tasks", "qa", "code", "--loads", "short",
            "--langs", "en", "--runs", "4", "--max-tokens", "12", "--keepalive", "5m", "--base-url", url,
            "--no-telemetry", "--events-endpoint", loopback(), "--no-progress",
            "--analyzer-args", "--no-quality --no-plots --no-progress"]
    first = procs.start(*args)

    def finished() -> int:
        return sum(1 for t, p in recorded(stream) if t == REQ_END)

    def in_flight() -> bool:  # a flushed req.start without its req.end: the next request is streaming
        items = recorded(stream)
        return sum(t == REQ_START for t, _ in items) > sum(t == REQ_END for t, _ in items)

    wait_for(lambda: (finished() >= 2 and in_flight()) or first.poll() is not None, 60,
             "two finished requests and a third in flight")
    first.kill()  # SIGKILL while a stream is open: no req.end, no batch.end, maybe a cut last object
    first.wait(10)

    header, before, problem = read_recording(stream)  # readable after the kill
    assert header["batch"] == "b"
    finished_before = {p["rid"] for t, p in before if t == REQ_END and p["ok"]}
    assert 2 <= len(finished_before) < PLANNED
    planned_order = [f"b/ok:latest/{c}/short/{r}" for c in ("000-qa", "001-code") for r in (1, 2, 3, 4)]
    killed_rid = next(rid for rid in planned_order if rid not in finished_before)  # the one in flight
    orphans = {p["rid"] for t, p in before if t == REQ_START} - {p["rid"] for t, p in before if t == REQ_END}
    assert orphans <= {killed_rid}  # a req.start without req.end, if it reached the disk, is that request

    resumed = procs.start(*args, "--resume")
    assert resumed.wait(90) == 0, procs.output(resumed)

    _, items, problem = read_recording(stream)
    assert problem is None
    ok_ends = Counter(p["rid"] for t, p in items if t == REQ_END and p["ok"])
    assert len(ok_ends) == PLANNED and set(ok_ends.values()) == {1}
    rows = read_csv(batch / "summary" / "results.csv")
    rids = Counter(r["rid"] for r in rows)
    assert len(rids) == PLANNED and set(rids.values()) == {1}, rids  # every request exactly once
    assert all(r["status"] == "ok" for r in rows), [(r["rid"], r["status"]) for r in rows if r["status"] != "ok"]
    assert killed_rid in rids
    stats = {(r["task"], r["metric"]): r for r in read_csv(batch / "summary" / "stats.csv")}
    for task in ("qa", "code"):  # each run counted once per group, none failed
        assert (stats[(task, "latency_s")]["n"], stats[(task, "latency_s")]["n_failed"]) == ("4", "0")
    # the per-request files agree with the recording (the killed request's files are from its rerun)
    bd = BatchDir(batch)
    raw = json.loads(bd.request_json(killed_rid).read_text(encoding="utf-8"))
    assert raw["ok"] is True and raw["generated_text"] == bd.text_file(killed_rid).read_text(encoding="utf-8")
