"""Fault/security at the process level: loopback by default, no unencrypted non-loopback bind,
oversize payloads dropped and counted by a subscriber process.

Already covered elsewhere (not repeated here): the daemon subprocess refusing a non-loopback bind
(tests/test_telemetry_e2e.py::TestSimDaemon::test_non_loopback_bind_without_keys_is_refused), CURVE
between the daemon subprocess and subscribers (::test_curve_keys_encrypt_the_bus) and the
library-level checks in tests/test_bus.py.
"""
import json
import threading
import time

import pytest
import zmq

from shared import bus
from shared.bus import Publisher, bind_pub
from shared.messages import MAX_PAYLOAD_BYTES, TEL_GPU, TEL_HB
from shared.recording import RecordingWriter, read_recording
from tests import synth as S
from tests.conftest import free_port
from tests.fault_helpers import analyzer, loopback, procs  # noqa: F401

pytestmark = pytest.mark.slow  # starts processes or a model (left out by `make test-fast`)


def test_default_endpoints_are_loopback(monkeypatch):
    """With no flags and no environment, both publishers bind 127.0.0.1 only."""
    monkeypatch.delenv(bus.ENV_TELEMETRY, raising=False)
    monkeypatch.delenv(bus.ENV_EVENTS, raising=False)
    assert bus.telemetry_endpoint().startswith("tcp://127.0.0.1:") and bus.is_loopback(bus.telemetry_endpoint())
    assert bus.events_endpoint().startswith("tcp://127.0.0.1:") and bus.is_loopback(bus.events_endpoint())


def test_collector_refuses_a_non_loopback_events_bind_without_curve(procs, tmp_path):
    """The collector process exits non-zero, names the endpoint and says how to fix it; it sends nothing."""
    (tmp_path / "b").mkdir()
    c = procs.start("collector", "--exp-dir", str(tmp_path / "b"), "--models", "m", "--no-telemetry",
                    "--no-analyze", "--events-endpoint", f"tcp://0.0.0.0:{free_port()}",
                    "--base-url", f"127.0.0.1:{free_port()}")
    assert c.wait(60) == 1
    out = procs.output(c)
    assert "refusing to bind tcp://0.0.0.0:" in out and "--curve-secret" in out
    assert not (tmp_path / "b" / "raw" / "stream.msgpack").exists() or \
        read_recording(tmp_path / "b" / "raw" / "stream.msgpack")[1] == []


def test_recorder_process_drops_and_counts_oversize_payloads(procs, tmp_path):
    """A publisher sends 5 MiB tel.gpu payloads between small heartbeats: `python -m telemetry.record`
    writes only the small ones (never unpacks the big ones) and reports how many it dropped."""
    ep = loopback()
    out = tmp_path / "rec.msgpack"
    rec = procs.start("telemetry.record", "--out", str(out), "--endpoint", ep, "--count", "6", "--duration", "30")
    stop = threading.Event()
    sent = {"big": 0, "small": 0}

    def rogue():
        ctx = zmq.Context()
        sock = bind_pub(ctx, ep)
        try:
            pub = Publisher(sock, "rogue@test")
            big = {"gpu": 0, "blob": b"\0" * (MAX_PAYLOAD_BYTES + 1024 * 1024)}
            while not stop.is_set():  # bounded by the recorder's --count/--duration and the join below
                pub.publish(TEL_GPU, big)
                sent["big"] += 1
                pub.publish(TEL_HB, {"gpus": 0, "gpu_source": "none", "simulated": False})
                sent["small"] += 1
                time.sleep(0.1)
        finally:
            sock.close(linger=0)
            ctx.term()

    thread = threading.Thread(target=rogue, daemon=True)
    thread.start()
    try:
        assert rec.wait(45) == 0, procs.output(rec)
    finally:
        stop.set()
        thread.join(10)
    _, items, problem = read_recording(out)
    assert problem is None and len(items) == 6
    assert {t for t, _ in items} == {TEL_HB}  # not one oversize message recorded
    log = procs.output(rec)
    dropped = int(log.split("dropped_oversize=")[1].split()[0])
    assert dropped >= 5  # one big one before each of (at least) 5 of the 6 recorded heartbeats
    assert out.stat().st_size < MAX_PAYLOAD_BYTES  # nothing big reached the file


def test_curve_daemon_gives_nothing_to_subscriber_processes_without_its_key(procs, tmp_path):
    """Daemon with CURVE; three `telemetry.tail --json` processes: with the daemon's public key (gets
    messages: the control), with another server's key, and with no keys (both receive nothing)."""
    keys, other = tmp_path / "keys", tmp_path / "other"
    assert procs.start("telemetry.keys", str(keys)).wait(30) == 0
    assert procs.start("telemetry.keys", str(other), "--name", "impostor").wait(30) == 0
    ep = loopback()
    daemon = procs.start("telemetry", "--gpu", "sim", "--endpoint", ep, "--watch", "--no-rapl", "--duration", "20",
                         "--curve-secret", str(keys / "telemetry.key_secret"))
    mine = str(keys / "subscriber.key_secret")
    right = procs.start("telemetry.tail", "--endpoint", ep, "--json", "--count", "3", "--curve-secret", mine,
                        "--curve-server-key", str(keys / "telemetry.key"))
    wrong = procs.start("telemetry.tail", "--endpoint", ep, "--json", "--duration", "4", "--curve-secret", mine,
                        "--curve-server-key", str(other / "impostor.key"))
    plain = procs.start("telemetry.tail", "--endpoint", ep, "--json", "--duration", "4")
    try:
        assert right.wait(30) == 0, procs.output(right)
        assert wrong.wait(30) == 0 and plain.wait(30) == 0
    finally:
        daemon.kill()
    got = [json.loads(line) for line in procs.output(right).splitlines() if line.startswith("{")]
    assert len(got) == 3 and all(m["topic"].startswith("tel.") and m["src"].startswith("telemetry@") for m in got)
    assert not [line for line in procs.output(wrong).splitlines() if line.startswith("{")]
    assert not [line for line in procs.output(plain).splitlines() if line.startswith("{")]


def test_analyzer_counts_hostile_messages_invalid_and_analyses_the_rest(tmp_path):
    """A recording with messages whose ``src`` is a map or a list, or whose integers are beyond 64 bits
    (tests/synth.hostile), among good ones: ``analyzer --batch`` (a first run, then one from the columnar
    copy) exits 0 with the results of the recording without them, and reports how many it dropped."""
    items = S.messages(S.tiny_spec())
    bad = S.hostile(items)
    mixed = list(items)
    for k, m in enumerate(bad):
        mixed.insert((k + 1) * len(items) // (len(bad) + 1), m)
    results = {}
    for name, msgs in (("clean", items), ("hostile", mixed)):
        root = tmp_path / name / "b"
        with RecordingWriter(root / "raw" / "stream.msgpack", meta={"batch": "b"}) as w:
            for topic, payload in msgs:
                w.write(topic, payload)
        for first in (True, False):  # from stream.msgpack, then from the columnar copy
            run = analyzer(root)
            assert run.returncode == 0, run.stderr[-2000:]
            if name == "clean":
                assert "invalid" not in run.stderr
            else:  # the count on every run; the first few named as the recording is read
                assert f"count={len(bad)}" in run.stderr and "messages_invalid" in run.stderr
                assert ("'src' must be a str" in run.stderr) == first
            results.setdefault(name, []).append((root / "summary" / "results.csv").read_bytes())
    assert results["hostile"] == results["clean"] and len(results["clean"][0].splitlines()) > 5
