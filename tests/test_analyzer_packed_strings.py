"""stream.PackedStrings: the requests' rids as one UTF-8 buffer and their bounds, read as the list of str
they stand for (any text, in order, sliced, taken, pickled), and built by StoredEvents as events come."""
import pickle
import random
from array import array

import numpy as np
import pytest

from analyzer import places, stream

RIDS = ["b/m/0/short/1", "", "批次/模型/问答/长/2", "emoji 🚀", "lone \udcff surrogate", "b/m/0/short/1x"]


def _packed(strings):
    text, ends = bytearray(), array("q")
    for s in strings:
        text += s.encode("utf-8", "surrogatepass")
        ends.append(len(text))
    return stream.PackedStrings.of(bytes(text), ends)


def test_packed_strings_read_as_the_list():
    p = _packed(RIDS)
    assert len(p) == len(RIDS) and list(p) == RIDS and [p[i] for i in range(len(RIDS))] == RIDS
    assert p[-1] == RIDS[-1] and list(p[1:4]) == RIDS[1:4] and list(p[::-2]) == RIDS[::-2]
    pick = np.array([4, 0, 0, 2])
    taken = p.take(pick)
    assert isinstance(taken, stream.PackedStrings) and list(taken) == [RIDS[i] for i in pick.tolist()]
    assert list(taken.take([3, 0])) == [RIDS[2], RIDS[4]]  # a view of a view
    assert list(pickle.loads(pickle.dumps(taken))) == list(taken)
    assert list(stream.take_strings(RIDS, pick)) == list(taken)  # a list's: a list
    assert len(_packed([])) == 0 and list(_packed([])) == []


def test_a_long_run_iterates_across_blocks_and_looks_up_by_rid():
    rids = [f"run/{k}/{'é' * (k % 3)}" for k in range(10_000)]
    p = _packed(rids)
    assert list(p) == rids  # (read a block of 4,096 bounds at a time)
    where = places.Places(p)
    assert all(where[r] == k for k, r in [(0, rids[0]), (4095, rids[4095]), (4096, rids[4096]), (9999, rids[9999])])


def test_stored_events_pack_each_rid_once(tmp_path):
    ev = stream.StoredEvents(stream.EventFile(tmp_path / "events.msgpack"))
    for k, rid in enumerate(["a", "中", "a", "b", "中"]):
        ev.add(0, k, 0, {"rid": rid, "seq": k, "t": k}, 0, 0)
    ev.done()
    assert isinstance(ev.rids, stream.PackedStrings) and list(ev.rids) == ["a", "中", "b"]
    assert list(ev.rid) == [0, 1, 0, 2, 1]


@pytest.mark.parametrize("recent", [1, 2, 3, 1 << 14])
def test_stored_events_number_rids_as_a_dict_of_every_rid_would(tmp_path, monkeypatch, recent):
    """Only the rids last met are looked up (``RECENT``): a rid met again after it was let go (a request
    restarted long after, or one whose events are far apart) is found among the rids' hashes and the
    whole numbered again with every rid held, so the numbers are a dict's of every rid, in any case."""
    monkeypatch.setattr(stream.StoredEvents, "RECENT", recent)
    rng = random.Random(recent)
    rids = [f"b/m/{k}/{'中' * (k % 3)}" for k in range(40)]
    order = [r for r in rids for _ in range(3)]  # each request's events together (the usual)
    order[60:60] = [rids[0], rids[5], "", rids[0]]  # and some met again long after
    for _ in range(3):
        order.insert(rng.randrange(len(order)), rng.choice(rids))
    ev = stream.StoredEvents(stream.EventFile(tmp_path / "events.msgpack"))
    for k, rid in enumerate(order):
        ev.add(0, k, 0, {"rid": rid, "seq": k, "t": k}, 0, 0)
    ev.done()
    want: dict[str, int] = {}
    for rid in order:
        want.setdefault(rid, len(want))
    assert list(ev.rids) == list(want) and ev.rid.tolist() == [want[r] for r in order]


def test_rids_numbered_once_each_when_every_one_comes_once_together(tmp_path, monkeypatch):
    """The usual case goes through once: no rid of the recent ones' numbering is another's."""
    calls = []
    real = stream._number_rids
    monkeypatch.setattr(stream, "_number_rids", lambda *a: calls.append(a[2]) or real(*a))
    monkeypatch.setattr(stream.StoredEvents, "RECENT", 2)
    ev = stream.StoredEvents(stream.EventFile(tmp_path / "events.msgpack"))
    for k in range(30):
        for kind in (0, 1, 2):
            ev.add(kind, 3 * k + kind, 0, {"rid": f"r{k}", "seq": 3 * k + kind, "t": k}, 0, 0)
    ev.done()
    assert calls == [2] and list(ev.rids) == [f"r{k}" for k in range(30)]
    assert ev.rid.tolist() == [k for k in range(30) for _ in range(3)]

def test_requests_starting_at_one_instant_are_in_rid_order_as_held(tmp_path):
    """The stored requests' order is (start t, rid), the held path's: rids are decoded only to break
    ties of the start instant, and the ties come out as the held path has them."""
    from analyzer import columnar
    from shared.recording import read_recording
    from tests import synth as S
    from tests.test_analyzer_columnar import write

    reqs = [S.Req(0.5, 0.9, run=k, chunk_s=[0.1]) for k in (3, 1, 2)]  # one start instant, rids out of order
    reqs += [S.Req(0.2 + 0.05 * k, 1.2, run=10 + k, chunk_s=[0.1]) for k in range(3)]
    msgs = S.messages(S.Spec(duration_s=2.0, rate_hz=20.0, gpus=[S.Gpu(S.constant(100.0))], requests=reqs))
    path = write(tmp_path / "raw" / "stream.msgpack", msgs)
    held = stream.build(read_recording(path)[1]).requests
    stored = columnar.load_batch(path)[0].requests
    assert isinstance(stored, stream.StoredRequests)
    assert list(stream.request_rids(stored)) == [r.rid for r in held]
    starts = [r.start_t for r in held]
    assert len(set(starts)) < len(starts)  # (ties there are)


def test_stored_requests_whose_first_tokens_come_out_of_their_order(tmp_path):
    """A later request's first token before an earlier one's (concurrent requests): each request still
    reads its own first tokens, as held; and one after another (the usual, taken as they come) too."""
    from analyzer import columnar
    from shared.recording import read_recording
    from tests import synth as S
    from tests.test_analyzer_columnar import write

    for reqs in ([S.Req(0.2, 1.5, run=0, chunk_s=[0.8]), S.Req(0.3, 1.2, run=1, chunk_s=[0.1]),
                  S.Req(0.4, 1.8, run=2, chunk_s=[0.05, 0.6])],
                 [S.Req(0.2 + 0.5 * k, 0.6 + 0.5 * k, run=k, chunk_s=[0.1]) for k in range(3)]):
        msgs = S.messages(S.Spec(duration_s=2.5, rate_hz=20.0, gpus=[S.Gpu(S.constant(100.0))], requests=reqs))
        path = write(tmp_path / f"{len(msgs)}" / "raw" / "stream.msgpack", msgs)
        held = stream.build(read_recording(path)[1]).requests
        stored = columnar.load_batch(path)[0].requests
        assert isinstance(stored, stream.StoredRequests) and len(stored) == len(held) == 3

        def firsts(r):
            return [f.t for f in r.first_tokens]
        assert [(r.rid, r.start_t, firsts(r)) for r in stored] == [(r.rid, r.start_t, firsts(r)) for r in held]
        assert all(firsts(r) for r in held)
