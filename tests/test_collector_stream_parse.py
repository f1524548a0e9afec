"""The sans-IO stream parsers, fed recorded bytes in every split."""
import json

import pytest

from collector.stream_parse import (BAD, DATA, DONE, EOF, ERROR_LINE, LineSplitter, NdjsonParser, SseParser,
                                    StreamProtocolError, ThinkSplitter)

OLLAMA_BODY = (
    '{"model":"m","created_at":"2023-08-04T08:52:19.385406455-07:00","response":"你好","done":false}\n'
    '{"model":"m","created_at":"2023-08-04T08:52:19Z","response":" \\u003cb\\u003e","done":false}\n'
    '{"model":"m","created_at":"2023-08-04T19:22:45.499127Z","response":"","done":true,"done_reason":"stop",'
    '"total_duration":10706818083,"load_duration":6338219291,"prompt_eval_count":26,'
    '"prompt_eval_duration":130079000,"eval_count":259,"eval_duration":4232710000}\n'
).encode("utf-8")

SSE_BODY = (
    'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":null}}]}\n\n'
    ': ping\n\n'
    'data:{"choices":[{"index":0,"delta":{"reasoning_content":"想"}}]}\n\n'
    'data: {"choices":[{"index":0,"delta":{"content":"答"}}]}\r\n\r\n'
    'event: message\n'
    'data: {"choices":[],"usage":{"completion_tokens":2}}\n\n'
    'data: [DONE]\n\n'
).encode("utf-8")


def _feed_in_pieces(parser, body: bytes, size: int):
    events = []
    for i in range(0, len(body), size):
        events += parser.feed(body[i:i + size])
    return events + parser.feed(b"")


def _summary(events):
    return [(e.kind, json.dumps(e.obj, ensure_ascii=False, sort_keys=True) if e.obj is not None else e.text)
            for e in events]


class TestNdjson:
    @pytest.mark.parametrize("size", [1, 2, 3, 7, 64, 10_000], ids=lambda s: f"pieces_of_{s}")
    def test_any_split_gives_same_events(self, size):
        """Byte-by-byte and odd splits (multibyte UTF-8 cut in half) parse like one read."""
        whole = _summary(_feed_in_pieces(NdjsonParser(), OLLAMA_BODY, len(OLLAMA_BODY)))
        assert _summary(_feed_in_pieces(NdjsonParser(), OLLAMA_BODY, size)) == whole
        assert [k for k, _ in whole] == [DATA, DATA, DATA, EOF]
        events = _feed_in_pieces(NdjsonParser(), OLLAMA_BODY, size)
        assert events[0].obj["response"] == "你好"
        assert events[1].obj["response"] == " <b>"
        assert events[2].obj["eval_count"] == 259

    def test_partial_line_waits_for_newline(self):
        p = NdjsonParser()
        assert p.feed(b'{"response":"a"') == []
        assert p.lines.pending_bytes == len(b'{"response":"a"')
        events = p.feed(b',"done":false}\n{"x"')
        assert [e.obj for e in events] == [{"response": "a", "done": False}]

    def test_last_line_without_newline_is_parsed_at_eof(self):
        p = NdjsonParser()
        assert p.feed(b'{"error":"model \'x\' not found"}') == []
        events = p.feed(b"")
        assert events[0].obj == {"error": "model 'x' not found"} and events[-1].kind == EOF

    def test_line_over_one_mib_is_one_event(self):
        big = {"done": True, "context": list(range(200_000))}
        body = json.dumps(big).encode() + b"\n"
        assert len(body) > 1 << 20
        events = _feed_in_pieces(NdjsonParser(), body, 65_536)
        assert events[0].kind == DATA and len(events[0].obj["context"]) == 200_000

    def test_runaway_line_is_a_protocol_error(self):
        p = NdjsonParser(max_line_bytes=1000)
        with pytest.raises(StreamProtocolError, match="1000 bytes"):
            p.feed(b"x" * 2000)

    def test_bad_json_line_is_reported_not_raised(self):
        events = NdjsonParser().feed(b"not json\n")
        assert events[0].kind == BAD and events[0].text == "not json"

    def test_feeding_after_eof_fails_loudly(self):
        p = LineSplitter()
        p.feed(b"")
        with pytest.raises(StreamProtocolError):
            p.feed(b"more")


class TestSse:
    @pytest.mark.parametrize("size", [1, 5, 13, 10_000], ids=lambda s: f"pieces_of_{s}")
    def test_comments_crlf_nospace_and_done(self, size):
        parser = SseParser()
        events = _feed_in_pieces(parser, SSE_BODY, size)
        assert [e.kind for e in events] == [DATA, DATA, DATA, DATA, DONE, EOF]
        assert events[0].obj["choices"][0]["delta"]["content"] is None
        assert events[1].obj["choices"][0]["delta"]["reasoning_content"] == "想"
        assert events[2].obj["choices"][0]["delta"]["content"] == "答"
        assert parser.comments == 1

    def test_llamacpp_error_line(self):
        body = (b'error: {"code":400,"message":"the request exceeds the available context size.",'
                b'"type":"invalid_request_error"}\n\ndata: [DONE]\n\n')
        events = SseParser().feed(body)
        assert events[0].kind == ERROR_LINE and events[0].obj["code"] == 400
        assert events[1].kind == DONE

    def test_eof_without_done_has_no_done_event(self):
        events = _feed_in_pieces(SseParser(), b'data: {"choices":[]}\n\n', 3)
        assert [e.kind for e in events] == [DATA, EOF]


class TestThinkSplitter:
    TEXT = "<think>\nI should add.\n</think>\n\nThe answer is 4."

    @pytest.mark.parametrize("size", [1, 2, 3, 8, 100], ids=lambda s: f"pieces_of_{s}")
    def test_inline_think_split_anywhere(self, size):
        sp = ThinkSplitter()
        thinking, content = "", ""
        for i in range(0, len(self.TEXT), size):
            th, ct = sp.feed(self.TEXT[i:i + size])
            thinking, content = thinking + th, content + ct
        th, ct = sp.finish()
        thinking, content = thinking + th, content + ct
        assert thinking.strip() == "I should add."
        assert content == "The answer is 4."

    def test_text_without_think_passes_through(self):
        sp = ThinkSplitter()
        assert sp.feed("<b>bold") == ("", "<b>bold")
        assert sp.feed(" <think>not at start</think>") == ("", " <think>not at start</think>")

    def test_unclosed_think_is_thinking_at_finish(self):
        sp = ThinkSplitter()
        th, ct = sp.feed("<think>still going</th")
        rest = sp.finish()
        assert th + rest[0] == "still going</th" and ct == "" and rest[1] == ""
