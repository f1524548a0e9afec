"""Fuzzing every parser of outside input with hypothesis: the Ollama NDJSON and OpenAI SSE stream
parsers, the recording reader, test_cases.json and config.py, and the bus's receive path.

Each property: random splits change nothing; random or mutated bytes raise nothing but the
documented error (StreamProtocolError, RecordingError, SettingsError, MessageError; the Inbox raises
nothing and counts); every complete message before the damage comes out unchanged; nothing hangs
(the parsers are synchronous; the long-line case is timed). `make test` runs a few dozen examples per
property (the "quick" profile in conftest.py); `make fuzz` a hundred times more. Fuzzing found: a
deeply nested JSON line raised RecursionError out of both stream parsers; test_cases.json with a
5000-digit number (ValueError) or deep nesting (RecursionError); config.py with an unhashable dict
key (TypeError), or a line the parser cannot hold (MemoryError)."""
from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

import msgpack
import pytest
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from collector.settings import SettingsError, load_test_cases, read_config_py
from collector.stream_parse import BAD, DATA, DONE, EOF, NdjsonParser, SseParser, StreamProtocolError
from shared.bus import Inbox, Publisher, bind_pub, connect_sub
from shared.messages import MessageError, Stamper, decode, encode
from shared.recording import RecordingError, RecordingWriter, read_recording

# JSON-able values of the kind servers and payloads carry (strings with multibyte UTF-8 included).
SCALARS = st.none() | st.booleans() | st.integers(-2**53, 2**53) | st.floats(allow_nan=False, allow_infinity=False) \
    | st.text(max_size=20)
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                                            max_size=4), max_leaves=12)
OBJECTS = st.dictionaries(st.text(max_size=8), VALUES, max_size=5)
CHUNKS = st.lists(st.integers(0, 10_000), max_size=12)  # split points


def _pieces(body: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(body) + 1) for c in cuts})
    out, prev = [], 0
    for p in points + [len(body)]:
        if p > prev:
            out.append(body[prev:p])
            prev = p
    return out


def _feed(parser, pieces: list[bytes]) -> list:
    events = []
    for piece in pieces:
        events += parser.feed(piece)
    return events + parser.feed(b"")


def _ndjson(objs: list[dict]) -> tuple[bytes, list[int]]:
    """The body and the end offset (after its newline) of each line."""
    body, ends = b"", []
    for o in objs:
        body += json.dumps(o, ensure_ascii=False).encode() + b"\n"
        ends.append(len(body))
    return body, ends


def _sse(objs: list[dict]) -> tuple[bytes, list[int]]:
    body, ends = b"", []
    for i, o in enumerate(objs):
        sep = b"data: " if i % 2 == 0 else b"data:"  # both spellings servers use
        body += (b": ping\n" if i % 3 == 0 else b"") + sep + json.dumps(o, ensure_ascii=False).encode() + b"\n\n"
        ends.append(len(body))
    return body + b"data: [DONE]\n\n", ends


PARSERS = [(NdjsonParser, _ndjson), (SseParser, _sse)]
DAMAGE = st.sampled_from(["truncate", "overwrite", "insert"])


def _damage(body: bytes, at: int, how: str, junk: bytes) -> bytes:
    if how == "truncate":
        return body[:at]
    if how == "overwrite":
        return body[:at] + junk + body[at + len(junk):]
    return body[:at] + junk + body[at:]


class TestStreamParsers:
    @pytest.mark.parametrize("parser_cls, frame", PARSERS)
    @given(objs=st.lists(OBJECTS, max_size=6), cuts=CHUNKS)
    def test_random_splits_give_the_objects_in_order(self, parser_cls, frame, objs, cuts):
        body, _ = frame(objs)
        events = _feed(parser_cls(), _pieces(body, cuts))
        assert [e.obj for e in events if e.kind == DATA] == objs
        assert events[-1].kind == EOF and not [e for e in events if e.kind == BAD]
        assert [e.kind for e in events].count(DONE) == (1 if parser_cls is SseParser else 0)

    @pytest.mark.parametrize("parser_cls, frame", PARSERS)
    @given(objs=st.lists(OBJECTS, min_size=1, max_size=6), at=st.integers(0, 10_000), how=DAMAGE,
           junk=st.binary(min_size=1, max_size=20), cuts=CHUNKS)
    def test_damage_keeps_every_message_before_it(self, parser_cls, frame, objs, at, how, junk, cuts):
        body, ends = frame(objs)
        at %= len(body) + 1
        events = _feed(parser_cls(), _pieces(_damage(body, at, how, junk), cuts))
        kept = sum(1 for end in ends if end <= at)
        assert [e.obj for e in events if e.kind == DATA][:kept] == objs[:kept]
        assert events[-1].kind == EOF

    @pytest.mark.parametrize("parser_cls", [NdjsonParser, SseParser])
    @given(data=st.binary(max_size=400), cuts=CHUNKS)
    @example(data=b"data: " + b"[" * 50_000 + b"\n", cuts=[])  # found by fuzzing: RecursionError
    @example(data=b"[" * 50_000 + b"\n", cuts=[])
    def test_random_bytes_raise_only_the_protocol_error(self, parser_cls, data, cuts):
        parser = parser_cls(max_line_bytes=64)
        try:
            events = _feed(parser, _pieces(data, cuts))
        except StreamProtocolError:
            assert parser.lines.pending_bytes > 64 or max(map(len, data.split(b"\n")), default=0) > 64
            return
        assert events[-1].kind == EOF
        assert all(e.kind in (DATA, BAD, DONE, EOF, "error") for e in events)

    @pytest.mark.parametrize("parser_cls", [NdjsonParser, SseParser])
    def test_feeding_after_eof_is_the_protocol_error(self, parser_cls):
        parser = parser_cls()
        parser.feed(b"")
        with pytest.raises(StreamProtocolError):
            parser.feed(b"{}\n")

    def test_a_long_line_in_one_byte_pieces_is_linear_not_a_hang(self):
        line = json.dumps({"response": "x" * 200_000}).encode() + b"\n"
        parser = NdjsonParser()
        t0 = time.monotonic()
        events = []
        for i in range(len(line)):
            events += parser.feed(line[i:i + 1])
        assert time.monotonic() - t0 < 10
        assert [e.obj["response"] for e in events if e.kind == DATA] == ["x" * 200_000]


def _recording(payloads: list[dict]) -> tuple[Path, list[tuple[str, dict]], int, list[int]]:
    """A real recording file; its messages, the header's end offset and each message's end offset."""
    path = Path(tempfile.mkdtemp(prefix="fuzz-rec-")) / "stream.msgpack"
    stamper = Stamper("collector@fuzz")
    items = [("req.end", stamper.stamp(p, t=1, wall=1)) for p in payloads]
    with RecordingWriter(path, meta={"batch": "fuzz"}) as w:
        for topic, payload in items:
            w.write(topic, payload)
    data = path.read_bytes()
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
    unpacker.feed(data)
    ends = []
    for _ in unpacker:
        ends.append(unpacker.tell())
    return path, items, ends[0], ends[1:]


class TestRecordingReader:
    @given(payloads=st.lists(OBJECTS, min_size=1, max_size=6), at=st.integers(0, 10_000), how=DAMAGE,
           junk=st.binary(min_size=1, max_size=20))
    @settings(suppress_health_check=[HealthCheck.too_slow])
    def test_damage_keeps_every_message_before_it(self, payloads, at, how, junk):
        path, items, header_end, ends = _recording(payloads)
        data = path.read_bytes()
        at %= len(data) + 1
        damaged = _damage(data, at, how, junk)
        assume(damaged != data)
        path.write_bytes(damaged)
        try:
            _header, got, problem = read_recording(path)
        except RecordingError:
            assert at < header_end  # only a damaged header makes the file "not a recording"
            return
        finally:
            path.unlink()
            path.parent.rmdir()
        kept = sum(1 for end in ends if end <= at)
        assert got[:kept] == items[:kept]
        if how == "truncate":
            assert got == items[:kept] and (problem is not None) == (at not in [header_end] + ends)

    @given(data=st.binary(max_size=300))
    @example(data=b"\x81\xa4kind\xa6header" + b"\x91" * 5000)  # a valid header, then deep nesting
    @example(data=b"\x81\xa4kind\xa6header\xdb\xff\xff\xff\xff")  # a string that claims 4 GiB
    def test_random_bytes_raise_only_recording_error(self, data):
        path = Path(tempfile.mkdtemp(prefix="fuzz-rec-")) / "stream.msgpack"
        path.write_bytes(data)
        try:
            header, items, problem = read_recording(path)
            assert header.get("kind") == "header"
            assert all(isinstance(t, str) and isinstance(p, dict) for t, p in items)
        except RecordingError as exc:
            assert str(path) in str(exc)
        finally:
            path.unlink()
            path.parent.rmdir()


VALID_CASES = json.dumps([
    {"prompt": "What is 2+2?", "task_type": "knowledge_qa", "reference_text": "4", "load": "short", "lang": "en",
     "max_tokens": 64, "temperature": 0.5, "model": ["a:1b", "b:3b"]},
    {"prompt": "写一首诗", "task_type": "creative_writing", "expect": {"min_tokens": 20}, "think": "off"},
    {"prompt": "binary search", "task": "code", "expect": {"entry": "f", "tests": "assert f(1) == 1"}, "seed": 7},
], ensure_ascii=False)
VALID_CONFIG = 'TEMPERATURE = 0.7\nRUNS = 3\nMODELS = ["a:1b", "b:3b"]\nKEEPALIVE = "0s"\nWARMUP = True\n'
# Characters config.py and JSON mutations are made of: syntax, quotes, brackets, digits, names, NUL, CJK.
SOURCE_CHARS = st.sampled_from(list("[]{}(),:;=\"'\\ \n\t0123456789.-+eE_abcxyzNTRUSAIONull") + ["\x00", "诗", "\ud800"])


def _mutate(text: str, edits: list[tuple[int, int, str]]) -> str:
    for pos, delete, insert in edits:
        pos %= len(text) + 1
        text = text[:pos] + insert + text[pos + delete:]
    return text


EDITS = st.lists(st.tuples(st.integers(0, 10_000), st.integers(0, 5), st.text(SOURCE_CHARS, max_size=8)),
                 min_size=1, max_size=4)


def _read(reader, name: str, content: bytes):
    path = Path(tempfile.mkdtemp(prefix="fuzz-cfg-")) / name
    path.write_bytes(content)
    try:
        return reader(path)
    finally:
        path.unlink()
        path.parent.rmdir()


class TestSettingsReaders:
    def test_the_unmutated_inputs_are_read(self):
        assert len(_read(load_test_cases, "test_cases.json", VALID_CASES.encode())) == 3
        assert _read(read_config_py, "config.py", VALID_CONFIG.encode())["runs"] == (3, 2)

    @given(edits=EDITS)
    @example(edits=[(0, 10_000, "[" * 100_000)])  # found by fuzzing: RecursionError
    @example(edits=[(60, 0, "1" * 5000)])          # found by fuzzing: ValueError (integer digits)
    def test_mutated_test_cases_json_is_read_or_a_settings_error(self, edits):
        try:
            cases = _read(load_test_cases, "test_cases.json", _mutate(VALID_CASES, edits).encode("utf-8", "surrogatepass"))
        except SettingsError as exc:
            assert "test_cases.json" in str(exc)
            return
        assert cases and all(isinstance(c["prompt"], str) and c["prompt"].strip() for c in cases)

    @given(value=VALUES)
    def test_any_json_value_is_read_or_a_settings_error(self, value):
        for doc in (value, [value], [{"prompt": "p", "task": "qa", "load": value}],
                    [{"prompt": "p", "task": "qa", "max_tokens": value, "model": value, "expect": value}]):
            try:
                _read(load_test_cases, "test_cases.json", json.dumps(doc).encode())
            except SettingsError:
                pass

    @given(data=st.binary(max_size=200))
    def test_random_bytes_as_test_cases_json(self, data):
        try:
            _read(load_test_cases, "test_cases.json", data)
        except SettingsError:
            pass

    @given(edits=EDITS)
    @example(edits=[(0, 10_000, "X = {[1]: 2}")])  # found by fuzzing: TypeError
    @example(edits=[(0, 10_000, "RUNS = " + "-" * 100_000 + "1")])  # found by fuzzing: MemoryError
    @example(edits=[(0, 0, "X = 1\x00\n")])
    def test_mutated_config_py_is_read_or_a_settings_error(self, edits):
        try:
            out = _read(read_config_py, "config.py", _mutate(VALID_CONFIG, edits).encode("utf-8", "surrogatepass"))
        except SettingsError as exc:
            assert "config.py" in str(exc)
            return
        assert all(isinstance(line, int) for _value, line in out.values())

    @given(data=st.binary(max_size=200))
    def test_random_bytes_as_config_py(self, data):
        try:
            _read(read_config_py, "config.py", data)
        except SettingsError:
            pass


class TestBusReceive:
    @given(frames=st.lists(st.binary(max_size=64), max_size=4))
    def test_random_frames_are_dropped_and_counted_never_raised(self, frames):
        inbox = Inbox(max_bytes=48)
        got = inbox.unpack(frames)
        assert (got is None) == (inbox.dropped_invalid + inbox.dropped_oversize == 1)
        if got is not None:
            assert isinstance(got[0], str) and isinstance(got[1], dict)

    @given(payload=OBJECTS, at=st.integers(0, 10_000), how=DAMAGE, junk=st.binary(min_size=1, max_size=8))
    @example(payload={}, at=0, how="overwrite", junk=b"\x91" * 8)
    def test_mutated_payload_decodes_or_is_a_message_error(self, payload, at, how, junk):
        data = encode(Stamper("t").stamp(payload, t=1, wall=1))
        damaged = _damage(data, at % (len(data) + 1), how, junk)
        try:
            assert isinstance(decode(damaged), dict)
        except MessageError:
            pass
        inbox = Inbox()
        out = inbox.unpack([b"tel.gpu", damaged])
        assert out is not None or inbox.dropped_invalid == 1

    def test_garbage_on_a_real_socket_loses_no_good_message(self, zctx, endpoint):
        """Over real PUB/SUB sockets: good messages interleaved with random frames, wrong frame counts and
        oversize payloads all arrive, in order; every bad one is counted."""
        rng = random.Random(14)
        pub = Publisher(bind_pub(zctx, endpoint), "fuzz@t")
        sub = connect_sub(zctx, endpoint)
        inbox = Inbox(max_bytes=4096)
        deadline = time.monotonic() + 5
        while inbox.recv(sub, timeout_ms=50) is None:  # slow joiner
            pub.publish("tel.hb", {"settle": True})
            assert time.monotonic() < deadline, "subscriber never connected"
        while inbox.recv(sub, timeout_ms=50) is not None:
            pass
        sent_good, sent_bad = [], 0
        for i in range(300):
            if rng.random() < 0.5:
                pub.publish("tel.gpu", {"gpu": 0, "i": i})
                sent_good.append(i)
                continue
            sent_bad += 1
            kind = rng.randrange(4)
            if kind == 0:
                pub.sock.send_multipart([b"tel.gpu", rng.randbytes(rng.randrange(1, 200))])
            elif kind == 1:
                pub.sock.send_multipart([b"tel.gpu"] + [rng.randbytes(8)] * rng.choice([2, 3]))
            elif kind == 2:
                pub.sock.send(b"tel.gpu")  # a single frame
            else:
                pub.sock.send_multipart([b"tel.gpu", encode({"blob": rng.randbytes(5000)})])
        got = []
        while True:
            msg = inbox.recv(sub, timeout_ms=1000)
            if msg is None:
                break
            got.append(msg[1].get("i"))
        # A random frame may happen to be a valid map: it is delivered (no "i"), never a lost good one.
        assert [i for i in got if i is not None] == sent_good
        assert inbox.dropped_invalid + inbox.dropped_oversize + (len(got) - len(sent_good)) == sent_bad
