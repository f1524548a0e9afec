"""A req.end whose chunk stamps are not integers within 64 bits (the contract checks that
client.chunk_t_ns is a list, not what it holds): the request keeps every figure but its inter-token
latency, on the in-memory path and on the columnar copy's (first run and re-analysis), where text
had stopped the whole analysis and a stamp beyond int64 had made a gap of millennia."""
import copy

import pytest

from analyzer import columnar, pipeline, stream
from tests import synth as S
from tests.test_analyzer_columnar import write

BAD = {"text": ["x"], "float": [1.5], "bool": [True], "beyond int64": [(1 << 64) - 1], "none": [None],
       "list": [[1]], "map": [{"a": 1}]}
KEPT = ("status", "gpu_energy_j", "latency_s", "ttft_ms", "tpot_ms", "output_tokens")


def _messages():
    reqs = [S.Req(0.3 + 0.8 * k, 0.9 + 0.8 * k, run=k, chunk_s=[0.1, 0.2, 0.3]) for k in range(4)]
    return list(S.messages(S.Spec(duration_s=5.0, rate_hz=50.0, gpus=[S.Gpu(S.constant(150.0))], requests=reqs)))


def _spoiled(msgs, head):
    out, rid = copy.deepcopy(msgs), None
    for topic, p in out:
        if topic == "req.end" and rid is None:
            ts = p["client"]["chunk_t_ns"]
            p["client"]["chunk_t_ns"] = head + ts[len(head):]
            rid = p["rid"]
    return out, rid


def _by_rid(analysis):
    return {r["rid"]: dict(r) for r in analysis.results}


@pytest.mark.parametrize("kind", list(BAD))
def test_unreadable_chunk_stamps_cost_only_that_requests_itl(tmp_path, kind):
    clean = _messages()
    want = _by_rid(pipeline.analyze(stream.build(clean), pipeline.Options(quality=False)))
    assert all(r["itl_ms_mean"] is not None for r in want.values())  # positive control: ITL where stamps are fine
    msgs, bad_rid = _spoiled(clean, BAD[kind])
    path = write(tmp_path / "raw" / "stream.msgpack", msgs)
    runs = [stream.build(msgs), columnar.load_batch(path)[0], columnar.load_batch(path)[0]]  # held; first; again
    for data in runs:
        got = _by_rid(pipeline.analyze(data, pipeline.Options(quality=False)))
        assert got.keys() == want.keys()
        for rid, row in got.items():
            assert {k: row[k] for k in KEPT} == {k: want[rid][k] for k in KEPT}
            if rid == bad_rid:
                assert row["itl_ms_mean"] is None and row["itl_ms_max"] is None
            else:
                assert (row["itl_ms_mean"], row["itl_ms_max"]) == (want[rid]["itl_ms_mean"], want[rid]["itl_ms_max"])
