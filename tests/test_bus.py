import time

import pytest

from shared.bus import BusSecurityError, CurveKeys, Inbox, Publisher, bind_pub, connect_sub, is_loopback
from shared.messages import encode


def _settle(pub, sub, inbox, topic="tel.hb"):
    """Publish until the subscriber sees one message (slow joiner), then drain."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        pub.publish(topic, {"settle": True})
        if inbox.recv(sub, timeout_ms=50) is not None:
            while inbox.recv(sub, timeout_ms=50) is not None:
                pass
            return
    raise AssertionError("subscriber never connected")


@pytest.mark.parametrize("ep,expected", [
    ("tcp://127.0.0.1:5556", True), ("tcp://localhost:1", True), ("tcp://[::1]:5", True),
    ("tcp://0.0.0.0:5556", False), ("tcp://*:5556", False), ("tcp://192.0.2.1:1", False),
    ("ipc:///tmp/x", True),
])
def test_is_loopback(ep, expected):
    assert is_loopback(ep) is expected


class TestPubSub:
    def test_messages_arrive_in_order_with_envelope(self, zctx, endpoint):
        pub = Publisher(bind_pub(zctx, endpoint), "telemetry@t")
        sub = connect_sub(zctx, endpoint)
        inbox = Inbox()
        _settle(pub, sub, inbox)
        for i in range(100):
            pub.publish("tel.gpu", {"gpu": 0, "i": i})
        got = [inbox.recv(sub, timeout_ms=2000) for _ in range(100)]
        assert [p["i"] for _, p in got] == list(range(100))
        seqs = [p["seq"] for _, p in got]
        assert seqs == list(range(seqs[0], seqs[0] + 100))

    def test_unsubscribed_topic_never_seen(self, zctx, endpoint):
        pub = Publisher(bind_pub(zctx, endpoint), "t")
        sub = connect_sub(zctx, endpoint, topics=("tel.hb",))
        inbox = Inbox()
        _settle(pub, sub, inbox)
        pub.publish("tel.gpu", {"gpu": 0})
        pub.publish("tel.hb", {"last": True})
        topic, payload = inbox.recv(sub, timeout_ms=2000)
        assert topic == "tel.hb" and payload["last"]
        assert inbox.recv(sub, timeout_ms=100) is None

    def test_oversize_payload_dropped_and_counted(self, zctx, endpoint):
        pub = Publisher(bind_pub(zctx, endpoint), "t")
        sub = connect_sub(zctx, endpoint)
        inbox = Inbox(max_bytes=1000)
        _settle(pub, sub, inbox)
        pub.sock.send_multipart([b"tel.gpu", encode({"blob": b"x" * 5000})])
        pub.publish("tel.hb", {"after": True})
        topic, payload = inbox.recv(sub, timeout_ms=2000)
        assert payload["after"] and inbox.dropped_oversize == 1

    def test_garbage_payload_counted_not_raised(self, zctx, endpoint):
        pub = Publisher(bind_pub(zctx, endpoint), "t")
        sub = connect_sub(zctx, endpoint)
        inbox = Inbox()
        _settle(pub, sub, inbox)
        pub.sock.send_multipart([b"tel.gpu", b"\xc1\xc1"])
        pub.publish("tel.hb", {"after": True})
        assert inbox.recv(sub, timeout_ms=2000)[1]["after"]
        assert inbox.dropped_invalid == 1


class TestSecurity:
    def test_non_loopback_bind_without_curve_refused(self, zctx):
        with pytest.raises(BusSecurityError, match="not loopback"):
            bind_pub(zctx, "tcp://0.0.0.0:0")

    def test_curve_subscriber_with_right_key_receives(self, zctx, endpoint):
        server = CurveKeys.generate()
        client = CurveKeys.generate()
        pub = Publisher(bind_pub(zctx, endpoint, curve=server), "t")
        sub = connect_sub(zctx, endpoint, curve=CurveKeys(client.public, client.secret, server.public))
        _settle(pub, sub, Inbox())

    def test_curve_subscriber_with_wrong_key_receives_nothing(self, zctx, endpoint):
        server = CurveKeys.generate()
        impostor = CurveKeys.generate()
        client = CurveKeys.generate()
        pub = Publisher(bind_pub(zctx, endpoint, curve=server), "t")
        sub = connect_sub(zctx, endpoint, curve=CurveKeys(client.public, client.secret, impostor.public))
        plain = connect_sub(zctx, endpoint)  # no CURVE at all
        right = connect_sub(zctx, endpoint, curve=CurveKeys(client.public, client.secret, server.public))
        inbox = Inbox()
        received = 0  # positive control: the same messages reach the subscriber with the right key
        deadline = time.monotonic() + 1.5
        while time.monotonic() < deadline:
            pub.publish("tel.gpu", {"gpu": 0})
            assert inbox.recv(sub, timeout_ms=20) is None
            assert inbox.recv(plain, timeout_ms=20) is None
            received += inbox.recv(right, timeout_ms=20) is not None
        assert received > 0


class TestBind:
    def test_endpoint_in_use_is_a_bind_error_not_a_security_one(self, zctx, endpoint):
        """A second publisher on a taken port gets BusBindError naming the endpoint."""
        from shared.bus import BusBindError

        first = bind_pub(zctx, endpoint)  # held: a dropped socket would be closed and free the port
        with pytest.raises(BusBindError, match=endpoint.replace(".", r"\.")):
            bind_pub(zctx, endpoint)
        first.close()


def test_subscriptions_receive_from_every_endpoint_and_say_which(zctx):
    """shared.bus.Subscriptions (the recorder's and analyzer --live's receive loop): one socket per
    endpoint, every message with the index of the endpoint it came from, topics filtered."""
    from shared.bus import Subscriptions, free_port

    eps = [f"tcp://127.0.0.1:{free_port()}" for _ in range(2)]
    pubs = [Publisher(bind_pub(zctx, ep), f"telemetry@h{i}") for i, ep in enumerate(eps)]
    with Subscriptions(zctx, eps, topics=("tel.",)) as subs:
        got: dict[int, list] = {0: [], 1: []}
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (len(got[0]) >= 5 and len(got[1]) >= 5):
            for i, pub in enumerate(pubs):
                pub.publish("tel.gpu", {"gpu": 0, "from": i})
                pub.publish("req.start", {"rid": "x"})  # not subscribed
            for index, batch in subs.poll(50):
                got[index].extend(batch)
        for index, msgs in got.items():
            assert len(msgs) >= 5
            assert {t for t, _ in msgs} == {"tel.gpu"}
            assert {p["from"] for _, p in msgs} == {index} and {p["src"] for _, p in msgs} == {f"telemetry@h{index}"}
