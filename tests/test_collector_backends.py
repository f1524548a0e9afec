"""Payloads, chunk mapping and failure classification (pure functions, no server)."""
import pytest

from collector import failures as F
from collector.backends import Params, build_payload, map_chunk, normalize_base_url
from collector.metadata import local_generators, model_meta_from_ollama, model_meta_from_openai


class TestPayloads:
    def test_ollama_generate_maps_max_tokens_to_num_predict(self):
        p = Params(temperature=0.7, top_p=0.9, num_ctx=4096, max_tokens=256, seed=1234, keep_alive="0s",
                   options={"top_k": 20})
        body = build_payload("ollama", "gemma3:4b", "hi", p)
        assert body["prompt"] == "hi" and body["stream"] is True and body["keep_alive"] == "0s"
        assert body["options"] == {"top_k": 20, "temperature": 0.7, "top_p": 0.9, "num_ctx": 4096,
                                   "num_predict": 256, "seed": 1234}
        assert "think" not in body

    def test_ollama_chat_uses_messages_and_think(self):
        body = build_payload("ollama-chat", "qwen3", "hi", Params(think=True))
        assert body["messages"] == [{"role": "user", "content": "hi"}] and body["think"] is True
        assert body["options"] == {}

    def test_openai_asks_for_usage_and_has_no_num_ctx(self):
        body = build_payload("openai", "m", "hi", Params(max_tokens=32, num_ctx=2048, seed=1, keep_alive="0s"))
        assert body["stream_options"] == {"include_usage": True}
        assert body["max_tokens"] == 32 and body["seed"] == 1
        assert "num_ctx" not in body and "keep_alive" not in body and "options" not in body

    def test_params_as_dict_leaves_server_defaults_absent(self):
        assert Params(max_tokens=8).as_dict() == {"max_tokens": 8}

    @pytest.mark.parametrize("backend", ["ollama", "ollama-chat"])
    def test_ollama_stop_sequences_go_in_options(self, backend):
        body = build_payload(backend, "m", "hi", Params(temperature=0.0, stop=["Question:", "</s>"],
                                                        options={"stop": ["old"], "top_k": 1}))
        assert body["options"] == {"stop": ["Question:", "</s>"], "temperature": 0.0, "top_k": 1}
        assert "stop" not in body  # Ollama reads it in options only

    @pytest.mark.parametrize("backend", ["openai", "openai-completions"])
    def test_openai_stop_sequences_are_a_top_level_list(self, backend):
        body = build_payload(backend, "m", "hi", Params(max_tokens=4, stop=["Question:", "<|im_end|>"]))
        assert body["stop"] == ["Question:", "<|im_end|>"] and "options" not in body

    @pytest.mark.parametrize("backend", ["ollama", "ollama-chat", "openai", "openai-completions"])
    def test_no_stop_sends_none_and_records_none(self, backend):
        for stop in (None, []):
            body = build_payload(backend, "m", "hi", Params(stop=stop))
            assert "stop" not in body and "stop" not in body.get("options", {})
            assert "stop" not in Params(stop=stop).as_dict()
        assert Params(stop=["\n#"]).as_dict() == {"stop": ["\n#"]}  # recorded in req.start params

    @pytest.mark.parametrize("value,backend,expected", [
        ("127.0.0.1:11434", "ollama", "http://127.0.0.1:11434"),
        ("localhost", "ollama", "http://localhost:11434"),
        (":8000", "ollama", "http://127.0.0.1:8000"),
        ("0.0.0.0", "ollama", "http://127.0.0.1:11434"),
        ("http://gpu-box:11434/", "ollama", "http://gpu-box:11434"),
        ("https://example.test", "ollama", "https://example.test"),
        ("127.0.0.1:8080", "openai", "http://127.0.0.1:8080"),
    ])
    def test_base_url_accepts_ollama_host_forms(self, value, backend, expected):
        assert normalize_base_url(value, backend) == expected

    def test_base_url_falls_back_to_ollama_host_env(self, monkeypatch):
        monkeypatch.setenv("OLLAMA_HOST", "10.1.2.3:9999")
        assert normalize_base_url(None, "ollama") == "http://10.1.2.3:9999"
        assert normalize_base_url(None, "openai") == "http://127.0.0.1:8080"


class TestChunkMapping:
    def test_ollama_final_chunk_metrics_renamed_and_absent_stays_absent(self):
        d = map_chunk("ollama", {"response": "", "done": True, "done_reason": "stop", "eval_count": 5,
                                 "eval_duration": 100, "load_duration": 7, "total_duration": 200})
        assert d.done and d.api == {"eval_count": 5, "eval_duration_ns": 100, "load_duration_ns": 7,
                                    "total_duration_ns": 200, "done_reason": "stop"}
        assert "prompt_eval_count" not in d.api

    def test_ollama_cached_prompt_tokens_where_the_server_reports_them(self):
        d = map_chunk("ollama", {"response": "", "done": True, "prompt_eval_count": 40, "prompt_eval_cached_count": 32})
        assert d.api["cached_tokens"] == 32 and d.api["prompt_eval_count"] == 40

    def test_ollama_thinking_and_chat_content(self):
        assert map_chunk("ollama", {"response": "", "thinking": "hm", "done": False}).thinking == "hm"
        d = map_chunk("ollama-chat", {"message": {"role": "assistant", "content": "x", "thinking": "y"}, "done": False})
        assert (d.content, d.thinking, d.done) == ("x", "y", False)

    def test_ollama_error_line(self):
        d = map_chunk("ollama", {"error": "an error was encountered while running the model: unexpected EOF"})
        assert d.error.startswith("an error was encountered")

    @pytest.mark.parametrize("delta,thinking", [({"reasoning_content": "a"}, "a"), ({"reasoning": "b"}, "b"),
                                                ({"content": None}, "")])
    def test_openai_reasoning_either_name_and_null_content(self, delta, thinking):
        d = map_chunk("openai", {"choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
        assert d.thinking == thinking and d.content == ""

    def test_openai_usage_and_llamacpp_timings(self):
        d = map_chunk("openai", {"choices": [], "usage": {"completion_tokens": 247, "prompt_tokens": 1085,
                                                          "prompt_tokens_details": {"cached_tokens": 3}},
                                 "timings": {"prompt_n": 1085, "prompt_ms": 203.378, "predicted_n": 247,
                                             "predicted_ms": 933.63}})
        assert d.api["completion_tokens"] == 247 and d.api["prompt_tokens"] == 1085 and d.api["cached_tokens"] == 3
        # llama.cpp's timings stay under their own name: never relabelled as Ollama's eval_* fields
        assert d.api["timings"]["predicted_ms"] == 933.63
        assert not {"eval_count", "eval_duration_ns", "prompt_eval_count", "prompt_eval_duration_ns"} & set(d.api)

    @pytest.mark.parametrize("body", [
        {"error": {"message": "model 'x' not found", "type": "not_found_error", "param": None, "code": None}},
        {"object": "error", "message": "model 'x' not found", "type": "NotFoundError", "param": None, "code": 404},
    ], ids=["new_shape", "old_vllm_shape"])
    def test_openai_error_shapes(self, body):
        assert map_chunk("openai", body).error == "model 'x' not found"


class TestFailures:
    @pytest.mark.parametrize("status,text,kind", [
        (404, "model 'x' not found", F.NOT_FOUND),
        (503, "server busy, please try again.  maximum pending requests exceeded", F.BUSY),
        (400, '"gemma3" does not support thinking', F.NO_THINK),
        (500, "model requires more system memory (7.5 GiB) than is available (5.2 GiB)", F.OOM),
        (500, "llama runner process has terminated: cudaMalloc failed: out of memory", F.OOM),
        (500, "llama-server reported out-of-memory during startup: ErrorOutOfMemory", F.OOM),
        (500, "model runner has unexpectedly stopped", F.BAD_RESPONSE),
        (400, "missing request body", F.BAD_RESPONSE),
    ])
    def test_classify_status(self, status, text, kind):
        assert F.classify_status(status, text) == kind

    def test_stream_error_oom_vs_midstream(self):
        assert F.classify_stream_error("CUDA error: out of memory") == F.OOM
        assert F.classify_stream_error("unexpected EOF") == F.MIDSTREAM

    def test_body_error_text_of_json_and_plain_bodies(self):
        assert F.body_error_text(b'{"error":"model \'x\' not found"}') == "model 'x' not found"
        assert F.body_error_text(b"Internal Server Error") == "Internal Server Error"
        assert F.body_error_text(b"") == "(empty body)"

    def test_connection_hint_names_the_fix(self):
        msg = F.connection_hint("http://127.0.0.1:11434", "Connection refused")
        assert "OLLAMA_HOST" in msg and "127.0.0.1:11434" in msg


class TestModelMeta:
    TAGS = {"models": [
        {"name": "deepseek-r1:latest", "digest": "0a8c", "size": 10,
         "details": {"family": "qwen2", "families": None, "parameter_size": "7.6B", "quantization_level": "Q4_K_M"}},
        {"name": "gpt-oss:120b-cloud", "remote_host": "https://cloud.invalid:443", "details": {}},
        {"name": "nomic-embed-text:latest", "capabilities": ["embedding"], "details": {}},
    ]}

    def test_all_leaves_out_cloud_and_embedding_models(self):
        assert local_generators(self.TAGS) == ["deepseek-r1:latest"]

    def test_meta_from_tags_and_show(self):
        show = {"details": {"family": "qwen2"}, "capabilities": ["completion", "thinking"],
                "model_info": {"general.architecture": "qwen2", "qwen2.context_length": 131072}}
        meta = model_meta_from_ollama("deepseek-r1", self.TAGS, show)
        assert meta["digest"] == "0a8c" and meta["parameter_size"] == "7.6B"
        assert meta["quantization_level"] == "Q4_K_M" and meta["family"] == "qwen2"
        assert meta["context_length"] == 131072 and "thinking" in meta["capabilities"]

    def test_meta_from_v1_models(self):
        meta = model_meta_from_openai("m", {"data": [{"id": "m", "owned_by": "llamacpp",
                                                      "meta": {"n_ctx_train": 8192, "n_params": 134}}]})
        assert meta == {"owned_by": "llamacpp", "context_length": 8192, "parameter_count": 134}


class TestRegistry:
    """One object per backend, registered in one place; the collector and the proxy read the same ones."""

    def test_every_backend_is_reachable_by_name_and_path(self):
        from collector.backends import BACKENDS, BY_PATH, REGISTRY, get
        assert set(BACKENDS) == {"ollama", "ollama-chat", "openai", "openai-completions"}
        for name in BACKENDS:
            b = get(name)
            assert b.name == name and BY_PATH[b.path] is b and REGISTRY[name] is b
        with pytest.raises(ValueError, match="choose one of"):
            get("nope")

    def test_openai_completions_text_and_usage(self):
        from collector.backends import get
        b = get("openai-completions")
        body = b.build_payload("m", "hi", Params(max_tokens=3))
        assert body["prompt"] == "hi" and "messages" not in body and body["stream_options"] == {"include_usage": True}
        d = b.map_chunk({"choices": [{"index": 0, "text": "Hel", "finish_reason": None}]})
        assert d.content == "Hel" and not d.done
        d = b.map_chunk({"choices": [{"index": 0, "text": "", "finish_reason": "length"}],
                         "usage": {"completion_tokens": 3, "prompt_tokens": 1}})
        assert d.api == {"completion_tokens": 3, "prompt_tokens": 1, "done_reason": "length"}

    def test_non_streamed_answers(self):
        from collector.backends import get
        d = get("openai").map_response({"choices": [{"message": {"content": "ok", "reasoning_content": "hm"},
                                                     "finish_reason": "stop"}], "usage": {"completion_tokens": 1}})
        assert (d.content, d.thinking, d.done, d.api["done_reason"], d.api["completion_tokens"]) == \
            ("ok", "hm", True, "stop", 1)
        d = get("ollama-chat").map_response({"message": {"content": "ok"}, "done": True, "eval_count": 1})
        assert d.content == "ok" and d.done and d.api["eval_count"] == 1

    def test_usage_asked_for_a_client_that_did_not_is_hidden_again(self):
        from collector.backends import get
        b = get("openai")
        body = {"model": "m", "stream": True}
        assert b.ask_usage(body) is True and body["stream_options"] == {"include_usage": True}
        assert b.ask_usage(body) is False  # already asked: the client gets usage as it asked
        assert b.hide_usage({"choices": [], "usage": {"completion_tokens": 1}}) is None
        assert b.hide_usage({"choices": [{"delta": {}}], "usage": {"x": 1}, "id": "a"}) == \
            {"choices": [{"delta": {}}], "id": "a"}
        assert get("ollama").ask_usage({"model": "m"}) is False  # Ollama always reports its counts

    def test_model_id_rule_per_backend(self):
        from collector.backends import get
        assert get("ollama-chat").model_id("gemma3") == "gemma3:latest"
        assert get("openai").model_id(" gemma3 ") == "gemma3"
