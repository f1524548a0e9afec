import dataclasses

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

    @pytest.mark.parametrize("src", [{"a": 1}, [1, 2], 7, None, b"x"])
    def test_src_must_be_a_str(self, src):
        """(a map or a list is unhashable: readers key their tables on it)"""
        for topic in (m.TEL_GPU, m.REQ_FIRST_TOKEN, "tel.future"):
            with pytest.raises(m.MessageError, match="'src' must be a str"):
                m.validate(topic, {**m.Stamper("x").stamp({"gpu": 0, "rid": "r", "kind": "content"}), "src": src})

    @pytest.mark.parametrize("topic,body,where", [
        (m.TEL_GPU, {"gpu": 0}, "t"), (m.TEL_GPU, {"gpu": 0}, "seq"), (m.TEL_HB, {}, "wall"),
        (m.TEL_GPU, {"gpu": 0}, "gpu"), (m.TEL_HOST, {"cpu_pct": 1.0}, "disk_read_b"),
        (m.CLOCK_SYNC, {"source": "s", "sent_ns": 1, "received_ns": 2, "remote_ns": 3}, "sent_ns"),
        (m.REQ_END, {"rid": "r", "ok": True, "client": {}}, "client.chunks"),
    ])
    def test_integers_must_fit_in_64_bits(self, topic, body, where):
        """msgpack carries 2**63 .. 2**64 - 1 (and readers keep int64 arrays): refused, named; the
        bounds themselves pass."""
        def with_value(v):
            p = m.Stamper("x").stamp(body)
            if where.startswith("client."):
                p["client"] = {where[len("client."):]: v}
            else:
                p[where] = v
            return p
        key = where.rpartition(".")[2]
        for v in (m.INT64_MAX, m.INT64_MIN):
            m.validate(topic, with_value(v), strict=True)
        for v in (m.INT64_MAX + 1, 2**64 - 1, m.INT64_MIN - 1):
            with pytest.raises(m.MessageError, match=f"'{key}'.*64-bit"):
                m.validate(topic, with_value(v))

    def test_a_big_integer_where_a_float_is_declared_is_a_reading(self):
        p = m.Stamper("x").stamp({"gpu": 0, "power_mw": 2**64 - 1})
        assert m.validate(m.TEL_GPU, p) is p


class TestContract:
    """shared/messages.py is the contract: typed bodies, checked types, one generated doc."""

    def test_doc_is_generated_from_the_code(self):
        """docs/contract.md is exactly what `python -m shared.contract` prints (no drift)."""
        from shared.contract import markdown
        from tests.conftest import ROOT

        doc = (ROOT / "docs" / "contract.md").read_text(encoding="utf-8")
        assert doc == markdown(), "regenerate it: python -m shared.contract > docs/contract.md"
        for topic, body in m.BODIES.items():  # every topic and key appears in it
            assert f"## `{topic}`" in doc and all(f"| `{k}` |" in doc for k in body.keys())

    def test_typed_round_trip_with_nested_client(self):
        body = m.ReqEnd(rid="b/m/000-qa/short/1", ok=True, text="答案", api={"eval_count": 3},
                        client=m.ClientMetrics(latency_s=1.5, chunks=2, chunk_t_ns=[5, 9]))
        payload = m.decode(m.encode(m.Stamper("collector@h").stamp(body.to_msg())))
        assert "error" not in payload and payload["client"] == {"latency_s": 1.5, "chunks": 2, "chunk_t_ns": [5, 9]}
        back = m.parse(m.REQ_END, payload)
        assert isinstance(back, m.ReqEnd) and isinstance(back.client, m.ClientMetrics)
        assert (back.text, back.client.chunk_t_ns, back.src, back.seq) == ("答案", [5, 9], "collector@h", 0)
        assert back.error is None  # absent stays absent, never a fake value

    def test_schema_v1_still_reads_with_old_names(self):
        p = m.Stamper("collector@h").stamp({"rid": "r", "ok": True, "client": {"chunk_t": [1, 2], "elapsed_s": 0.5}})
        p["v"] = 1
        assert m.parse(m.REQ_END, p).client.chunk_t_ns == [1, 2]

    @pytest.mark.parametrize("topic,bad,good,needle", [
        (m.TEL_GPU, {"gpu": True}, {"gpu": 1}, "'gpu' must be int"),               # bool is not an index
        (m.TEL_GPU, {"gpu": 0, "power_mw": "12"}, {"gpu": 0, "power_mw": 12}, "'power_mw' must be int/float"),
        (m.TEL_HOST, {"cpu_pct": 3.0, "rapl_uj": [1]}, {"cpu_pct": 3, "rapl_uj": {"z": 1}}, "'rapl_uj' must be dict"),
        (m.REQ_END, {"rid": "r", "ok": 1}, {"rid": "r", "ok": False}, "'ok' must be bool"),
        (m.REQ_END, {"rid": "r", "ok": True, "client": {"chunks": "9"}}, {"rid": "r", "ok": True, "client": {"chunks": 9}},
         "req.end.client: key 'chunks'"),
    ])
    def test_wrong_types_are_named(self, topic, bad, good, needle):
        with pytest.raises(m.MessageError, match=needle):
            m.validate(topic, m.Stamper("x").stamp(bad))
        m.validate(topic, m.Stamper("x").stamp(good), strict=True)  # positive control: the right type passes

    def test_strict_refuses_undeclared_keys_only_when_asked(self):
        p = m.Stamper("x").stamp({"gpu": 0, "power_watts": 5})
        assert m.validate(m.TEL_GPU, p) is p   # a newer publisher may add keys: readers go on
        with pytest.raises(m.MessageError, match=r"not in the contract: \['power_watts'\]"):
            m.validate(m.TEL_GPU, p, strict=True)

    def test_unknown_topic_needs_only_an_envelope(self):
        p = m.Stamper("x").stamp({"anything": 1})
        assert m.validate("tel.future", p) is p


class TestDeclaredColumns:
    """The analyzer's per-sample column lists come from the declarations (``series=True``,
    ``label=True``), not from hand copies: changing them is a deliberate edit of this list."""

    def test_series_and_label_keys_are_the_documented_ones(self):
        assert m.GPU_SERIES == ("power_mw", "energy_mj", "util_gpu_pct", "util_mem_pct", "mem_used_mib",
                                "mem_total_mib", "temp_c", "sm_clock_mhz")
        assert m.HOST_SERIES == ("cpu_pct", "mem_used_mib", "mem_total_mib", "swap_used_mib", "cpu_count",
                                 "server_cpu_s")
        assert m.GPU_SERIES == m.TelGpu.series_keys() and m.HOST_SERIES == m.TelHost.series_keys()
        assert m.TelGpu.label_keys() == ("uuid", "name", "driver", "power_kind")
        assert m.TelHost.label_keys() == () and m.TelHb.series_keys() == m.TelHb.label_keys() == ()
        # no event topic declares any: they stay maps in the analyzer
        assert not any(b.series_keys() or b.label_keys() for t, b in m.BODIES.items() if not t.startswith("tel."))

    def test_a_flag_on_a_key_of_the_wrong_type_fails_when_read(self):
        @dataclasses.dataclass(kw_only=True)
        class Bad(m.TelGpu):
            fan_mode: str | None = m._k("fan mode", series=True)

        with pytest.raises(TypeError, match=r"Bad.fan_mode: declared series=True but typed str"):
            Bad.series_keys()

    def test_declared_names_the_missing_key(self):
        assert m.TelGpu.declared("gpu", "power_mw", "t") == ("gpu", "power_mw", "t")
        with pytest.raises(KeyError, match=r"TelGpu declares no key 'power_w'.*shared/messages.py"):
            m.TelGpu.declared("gpu", "power_w")
