import pytest

from shared import messages as m


class TestStamper:
    def test_numbers_messages_from_zero_and_keeps_body(self):
        """Each stamped payload carries the envelope and a seq one above the last."""
        st = m.Stamper("telemetry@h")
        a = st.stamp({"gpu": 0, "power_mw": 1000})
        b = st.stamp({"gpu": 0})
        assert (a["seq"], b["seq"]) == (0, 1)
        assert a["src"] == "telemetry@h" and a["v"] == m.SCHEMA_VERSION
        assert a["power_mw"] == 1000 and b["t"] >= a["t"]

    def test_caller_supplied_t_derives_wall(self):
        """A reading's own monotonic stamp is kept and wall is derived from it."""
        t, wall = m.now_ns()
        p = m.Stamper("x").stamp({}, t=t - 1_000_000_000)
        assert p["t"] == t - 1_000_000_000
        assert abs((wall - 1_000_000_000) - p["wall"]) < 50_000_000


class TestCodec:
    def test_round_trip_keeps_types(self):
        payload = m.Stamper("x").stamp({"gpu": 1, "procs": {123: 5.5}, "text": "中文", "ok": True})
        assert m.decode(m.encode(payload)) == payload

    def test_oversize_refused_before_unpacking(self):
        with pytest.raises(m.MessageError, match="over the 10-byte limit"):
            m.decode(b"\x80" * 11, max_bytes=10)

    @pytest.mark.parametrize("data", [b"\xc1", b"\x92\x01"], ids=["never_used_byte", "truncated_array"])
    def test_garbage_is_a_message_error(self, data):
        with pytest.raises(m.MessageError):
            m.decode(data)

    def test_non_map_payload_refused(self):
        with pytest.raises(m.MessageError, match="must be a msgpack map"):
            m.decode(m.encode([1, 2]))  # type: ignore[arg-type]


class TestValidate:
    def test_missing_required_key_named(self):
        p = m.Stamper("x").stamp({"ok": True})
        with pytest.raises(m.MessageError, match="req.end: missing key 'rid'"):
            m.validate(m.REQ_END, p)

    def test_wrong_version_named(self):
        p = m.Stamper("x").stamp({"gpu": 0})
        p["v"] = 99
        with pytest.raises(m.MessageError, match="schema version 99"):
            m.validate(m.TEL_GPU, p)

    def test_valid_payload_passes(self):
        p = m.Stamper("x").stamp({"rid": "r", "kind": "content"})
        assert m.validate(m.REQ_FIRST_TOKEN, p) is p
