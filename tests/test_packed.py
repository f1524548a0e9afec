"""Telemetry read from its msgpack bytes (analyzer.packed, RecordingReader.scan) against msgpack.

The reference is the message-list path: ``stream.build`` over ``read_recording`` (msgpack decodes
every object). The scanned path must give the same batch, the same invalid count and the same cut, on
recordings built to trip a byte-level reader: look-alike messages inside strings (one placed where it
would chain into the next real message), every msgpack number width, float32, integers beyond 64 bits
in some members of a group, duplicate and non-string keys, nested values, long strings, reads so small
that messages and events span them, and corrupt bytes.
"""
from __future__ import annotations

import struct

import msgpack
import numpy as np
import pytest

from analyzer import columnar, packed, stream
from shared import messages as M
from shared.recording import HEADER_KIND, RecordingReader, read_recording
from tests import synth as S
from tests.test_analyzer_columnar import assert_same

_TEL = M.Stamper("telemetry@pk")
_COL = M.Stamper("collector@pk")


def gpu_body(i: int, g: int) -> dict:
    return {"gpu": g, "uuid": f"GPU-pk-{g}", "name": "Packed GPU", "power_kind": "instant",
            "power_mw": 150_000.0 + 10 * i + g, "energy_mj": 5_000_000 + 1_500 * i, "util_gpu_pct": float(i % 100),
            "temp_c": 60 + i % 7, "sm_clock_mhz": 1_800.0}


def rec(i: int, g: int, envelope: dict | None = None, **extra) -> bytes:
    """One tel.gpu message as msgpack-python packs it (``envelope``: its envelope keys overridden)."""
    t = S.T0_NS + i * 10_000_000
    p = _TEL.stamp({**gpu_body(i, g), **extra}, t=t, wall=S.WALL0_NS + i)
    return msgpack.packb([M.TEL_GPU, {**p, **(envelope or {})}])


def raw_map(pairs: list[tuple[bytes, bytes]]) -> bytes:
    """A map from already packed keys and values (any widths, a key twice: what a packer never writes)."""
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
    return head + b"".join(k + v for k, v in pairs)


def odd(i: int, value: bytes, key: bytes = msgpack.packb("power_mw"), dup: bool = False) -> bytes:
    """A tel.gpu message whose ``key`` holds ``value`` exactly as given (a width msgpack-python would not
    choose, float32, ...); ``dup``: the key sent twice, the last value counting."""
    p = _TEL.stamp(gpu_body(i, 0), t=S.T0_NS + i * 10_000_000, wall=S.WALL0_NS)
    pairs = [(msgpack.packb(k), msgpack.packb(v)) for k, v in p.items() if msgpack.packb(k) != key]
    pairs += [(key, msgpack.packb(-1.0))] * dup + [(key, value)]
    return b"\x92" + msgpack.packb(M.TEL_GPU) + raw_map(pairs)


def event(topic: str, body: dict, i: int) -> bytes:
    return msgpack.packb([topic, _COL.stamp(body, t=S.T0_NS + i * 10_000_000, wall=S.WALL0_NS)])


def write_raw(path, messages: list[bytes], tail: bytes = b"") -> None:
    header = {"v": M.SCHEMA_VERSION, "kind": HEADER_KIND, "created": 1, "host": "pk", "batch": "t"}
    path.write_bytes(msgpack.packb(header) + b"".join(messages) + tail)


def hostile_stream() -> list[bytes]:
    """~1,000 GPU ticks of 3 GPUs with a slow tick every 10, events, and every oddity a byte reader meets."""
    out = [event(M.BATCH_START, {"batch": "t", "backend": "ollama", "planned": 1, "models": {},
                                 "cases": []}, 0)]
    i = 0
    for i in range(1, 340):
        for g in range(3):
            slow = {"driver": "550.54", "power_limit_w": 300.0, "pstate": "P0"} if i % 10 == 0 else {}
            if g == 1 and i % 25 == 0:
                slow["procs"] = {"4242": 1024.0}          # a nested value: msgpack reads this one
            out.append(rec(i, g, **slow))
        if i == 50:
            look = rec(10_000, 2)                       # a whole tel.gpu message inside an event's bytes ...
            out.append(event(M.REQ_START, {"rid": "r1", "model": "m", "task": "qa", "load": "short",
                                           "run": 0, "case": 0, "blob": look + b"!", "prompt": "💧tel.gpu"}, i))
            # ... and one at the very end of an event, so that it ends where the next message begins
            out.append(event(M.REQ_END, {"rid": "r1", "ok": True, "text": "x", "blob": look}, i))
        if i == 80:
            out += [odd(i, b"\xca" + struct.pack(">f", 1.5)),          # float32
                    odd(i + 1, b"\xcd\x01\x00"),                       # uint16 256 in a float key
                    odd(i + 2, b"\xd3" + struct.pack(">q", -7)),       # int64 -7, not minimal
                    odd(i + 3, b"\xf0"),                               # negative fixint -16
                    odd(i + 4, b"\xcf" + struct.pack(">Q", 2**64 - 1)),  # beyond int64, a float key: valid
                    odd(i + 5, msgpack.packb(float("inf"))),
                    odd(i + 6, msgpack.packb(True)),                   # a boolean reading: invalid
                    odd(i + 7, msgpack.packb(3.0), dup=True),          # a key twice: the last counts
                    odd(i + 8, msgpack.packb(2.0), key=msgpack.packb(7)),  # a key that is no string
                    odd(i + 9, b"\xcf" + struct.pack(">Q", 2**63), key=msgpack.packb("t")),  # t past int64
                    odd(i + 10, msgpack.packb(3), key=msgpack.packb("v")),  # schema version 3: unread
                    odd(i + 11, msgpack.packb("GPU-" + "9" * 40), key=msgpack.packb("uuid")),  # str8 label
                    odd(i + 12, msgpack.packb(None), key=msgpack.packb("uuid")),
                    odd(i + 13, msgpack.packb(True), key=msgpack.packb("simulated")),
                    odd(i + 14, msgpack.packb(float("nan")), key=msgpack.packb("power_limit_w")),
                    odd(i + 15, msgpack.packb(250), key=msgpack.packb("power_limit_w")),
                    rec(i + 16, 0, **{f"extra_{k}": float(k) for k in range(300)}),   # more keys than read here
                    rec(i + 17, 0, **{f"x{k}": "y" * 30 for k in range(200)}),       # longer than read here
                    rec(i + 18, 0, **{f"e{k}": float(k) for k in range(240)})]       # as many as read here
        if i == 120:  # members of a valid group (the same bytes but numbers) that the contract refuses
            out += [rec(i, 0, envelope={"t": 2**63 + 5}), rec(i, 1, envelope={"v": 3}),
                    rec(i, 2, envelope={"wall": 2**64 - 1})]
        if i % 10 == 0:
            out.append(msgpack.packb([M.TEL_HOST, _TEL.stamp({"cpu_pct": 20.0, "rapl_uj": {"p": 7 * i}},
                                                             t=S.T0_NS + i * 10_000_000, wall=1)]))
    out.append(event(M.BATCH_END, {"batch": "t", "requests": 1}, i + 1))
    return out


def scanned(path, read_bytes: int):
    """(Decoded, reader) by RecordingReader.scan and the decoder's finder; how many messages it took
    from the bytes."""
    reader, dec, taken = RecordingReader(path), columnar.Decoder(), 0
    for part in reader.scan(dec.find, read_bytes=read_bytes):
        taken += part.sel.size
        dec.feed_scanned(part)
    return dec.finish(), reader, taken


def assert_like_msgpack(path, read_bytes: int) -> int:
    """The scanned decode of ``path`` equals the message list's batch, invalid count and cut; returns
    how many messages were taken from the bytes."""
    header, items, problem = read_recording(path)
    dec, reader, taken = scanned(path, read_bytes)
    assert reader.problem == problem and reader.header == header
    assert reader.messages == len(items)
    assert_same(stream.build(items), columnar.to_batch(dec))
    return taken


@pytest.mark.parametrize("read_bytes", [97, 4096, 1 << 23])
def test_a_hostile_recording_reads_as_msgpack_reads_it(tmp_path, read_bytes):
    path = tmp_path / "stream.msgpack"
    write_raw(path, hostile_stream())
    taken = assert_like_msgpack(path, read_bytes)
    gpus = sum(t == M.TEL_GPU for t, _ in read_recording(path)[1])
    if read_bytes > 1000:  # most ticks come from the bytes (tiny reads cut most of them: msgpack's)
        assert taken > 0.8 * gpus
    batch = stream.build(read_recording(path)[1])
    assert batch.invalid == 6  # a boolean reading, t, then wall past int64 (twice), version 3 (twice)


def test_a_look_alike_inside_a_text_is_found_but_never_taken(tmp_path):
    """The finder reads the bytes of a message inside a req.end (binary, ending where the next real
    message begins); the reader takes none of them: the bytes are the event's, the GPU rows the real ones."""
    look = rec(10_000, 2)
    real = [rec(i, 0) for i in range(1, 6)]
    messages = real[:2] + [event(M.REQ_END, {"rid": "r", "ok": True, "blob": look}, 3)] + real[2:]
    path = tmp_path / "stream.msgpack"
    write_raw(path, messages)
    dec, reader, taken = scanned(path, 1 << 20)
    buf = path.read_bytes()
    found = columnar.Decoder().find(buf)
    inside = buf.index(look)
    assert inside in found.starts.tolist()  # found ...
    assert taken == len(real)                # ... never taken
    assert_like_msgpack(path, 1 << 20)
    assert dec.tables[M.TEL_GPU].n == len(real)


def test_a_cut_or_corrupt_byte_anywhere_reads_as_msgpack_reads_it(tmp_path):
    """Every prefix of a short recording, and a corrupt byte (0xc1, never valid) or a message that is
    not [topic, map] at several places: the same messages, invalid count and problem as msgpack's path."""
    messages = [rec(i, i % 2) for i in range(1, 9)] + [event(M.REQ_START, {"rid": "r"}, 9)] + \
        [rec(i, i % 2) for i in range(10, 14)]
    whole = msgpack.packb({"v": M.SCHEMA_VERSION, "kind": HEADER_KIND}) + b"".join(messages)
    path = tmp_path / "stream.msgpack"
    for cut in range(1, len(whole) + 1, 3):
        path.write_bytes(whole[:cut])
        try:
            assert_like_msgpack(path, 64)
        except Exception as exc:  # no header yet: both paths refuse it alike
            with pytest.raises(type(exc)):
                read_recording(path)
    for k in (0, 3, 8, 12):
        for junk in (b"\xc1", msgpack.packb([1, 2, 3])):
            write_raw(path, messages[:k] + [junk] + messages[k:])
            assert_like_msgpack(path, 1 << 20)
            assert read_recording(path)[2] is not None


def test_numbers_are_read_as_msgpack_reads_them():
    """Every number class (fixints, every int width signed and unsigned, float32, float64) through
    Found.numbers equals msgpack's value."""
    values = [0, 5, 127, -1, -32, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1, 2**64 - 1,
              -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63, 1.5, -0.0, 1e300]
    f32 = b"\xca" + struct.pack(">f", 0.1)
    raw = [msgpack.packb(v) for v in values] + [f32]
    want = values + [struct.unpack(">f", struct.pack(">f", 0.1))[0]]
    finder = packed.Finder(M.TEL_GPU, lambda p: True, (), M.READABLE_VERSIONS)
    for r, w in zip(raw, want):
        msg = odd(1, r)
        found = finder(msg * 3)
        assert found.starts.tolist() == [0, len(msg), 2 * len(msg)]
        lay = found.groups[int(found.group[0])].layout
        got = found.numbers(found.starts, "power_mw", lay)
        assert got.tolist() == [w] * 3 and (np.signbit(got[0]) == np.signbit(w)), (r, got, w)
