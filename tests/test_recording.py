import msgpack
import pytest

from shared.messages import Stamper
from shared.recording import RecordingError, RecordingReader, RecordingWriter, read_recording


def _write(path, n=20):
    st = Stamper("telemetry@test")
    sent = []
    with RecordingWriter(path, meta={"purpose": "test"}) as w:
        for i in range(n):
            p = st.stamp({"gpu": 0, "power_mw": 1000 + i, "text": "能量" * (i % 3)})
            w.write("tel.gpu", p)
            sent.append(("tel.gpu", p))
    return sent


class TestRoundTrip:
    def test_reads_back_every_message_and_header(self, tmp_path):
        path = tmp_path / "s.msgpack"
        sent = _write(path)
        header, items, problem = read_recording(path)
        assert header["kind"] == "header" and header["purpose"] == "test"
        assert items == sent and problem is None


class TestTruncation:
    def test_cut_at_every_byte_of_last_object_yields_all_complete(self, tmp_path):
        """Cut anywhere inside the last object: all earlier messages come back and the cut is reported."""
        path = tmp_path / "s.msgpack"
        sent = _write(path, n=5)
        data = path.read_bytes()
        last_len = len(msgpack.packb(list(sent[-1]), use_bin_type=True))
        start = len(data) - last_len
        for cut in range(start, len(data)):
            cut_path = tmp_path / f"cut{cut}.msgpack"
            cut_path.write_bytes(data[:cut])
            reader = RecordingReader(cut_path)
            got = list(reader)
            assert got == sent[:-1], cut
            if cut == start:
                assert reader.problem is None
            else:
                assert "truncated tail" in reader.problem and str(start) in reader.problem

    def test_garbage_after_messages_reported_as_corrupt(self, tmp_path):
        path = tmp_path / "s.msgpack"
        sent = _write(path, n=3)
        with open(path, "ab") as fh:
            fh.write(msgpack.packb({"not": "a message"}))
        reader = RecordingReader(path)
        assert list(reader) == sent
        assert reader.problem.startswith("corrupt object")

    def test_bytes_that_are_no_msgpack_reported_by_name(self, tmp_path):
        """0xc1 is never valid msgpack: msgpack's FormatError has no message, the problem names it."""
        path = tmp_path / "s.msgpack"
        sent = _write(path, n=3)
        good = path.stat().st_size
        with open(path, "ab") as fh:
            fh.write(b"\xc1")
        reader = RecordingReader(path)
        assert list(reader) == sent
        assert reader.problem == f"corrupt data at byte {good}: FormatError"

    def test_file_without_header_is_a_clear_error(self, tmp_path):
        path = tmp_path / "x.msgpack"
        path.write_bytes(msgpack.packb(["tel.gpu", {}]))
        with pytest.raises(RecordingError, match="not a recording header"):
            list(RecordingReader(path))


class TestAppend:
    def test_reopen_cuts_tail_and_appends_after_last_whole_message(self, tmp_path):
        """Resume after a kill: the truncated object is dropped, new messages follow, one header."""
        path = tmp_path / "s.msgpack"
        sent = _write(path, n=4)
        data = path.read_bytes()
        path.write_bytes(data[:-3])
        st = Stamper("collector@test")
        extra = st.stamp({"rid": "r1", "ok": True})
        with RecordingWriter(path) as w:
            assert w.resumed_from == 3
            w.write("req.end", extra)
        header, items, problem = read_recording(path)
        assert problem is None
        assert items == sent[:3] + [("req.end", extra)]


def test_bus_recording_writes_batches_and_own_events_and_stops_at_count(tmp_path):
    """shared.recording.BusRecording, the core of both recorders: received batches and own events in
    one file, a count limit cutting inside a batch, on_batch told which endpoint sent what."""
    import threading

    from shared.recording import BusRecording, read_recording

    class Script:  # a bus source that hands out scripted batches (the real one is shared.bus.Subscriptions)
        def __init__(self):
            self.batches = [[(0, [("tel.gpu", {"i": 0}), ("tel.gpu", {"i": 1})])], [],
                            [(1, [("tel.hb", {"i": 2})]), (0, [("tel.gpu", {"i": 3}), ("tel.gpu", {"i": 4})])]]

        def poll(self, timeout_ms):
            return self.batches.pop(0) if self.batches else []

    seen = []
    rec = BusRecording(tmp_path / "s.msgpack", meta={"recorder": "test"})
    rec.write("req.start", {"i": -1})
    got = rec.run(Script(), threading.Event(), count=4, on_batch=lambda i, b: seen.append((i, len(b))))
    rec.close()
    _, items, problem = read_recording(tmp_path / "s.msgpack")
    assert got == 4 and problem is None
    assert [p["i"] for _, p in items] == [-1, 0, 1, 2, 3]
    assert seen == [(0, 2), (1, 1), (0, 1)]
