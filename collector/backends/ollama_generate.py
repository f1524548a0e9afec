"""Ollama's native ``POST /api/generate`` (NDJSON): ``response`` text, ``thinking``, metrics on the
``done`` chunk. :mod:`collector.backends.ollama_chat` differs only in where the text is."""
from __future__ import annotations

from typing import Any

from collector.backends.common import Backend, Delta, Params
from collector.failures import error_text

# Ollama final-chunk field -> contract key (durations are already integer ns on the wire).
OLLAMA_METRICS = {
    "eval_count": "eval_count",
    "eval_duration": "eval_duration_ns",
    "prompt_eval_count": "prompt_eval_count",
    "prompt_eval_duration": "prompt_eval_duration_ns",
    "load_duration": "load_duration_ns",
    "total_duration": "total_duration_ns",
    "done_reason": "done_reason",
    # newer servers: prompt tokens taken from the KV cache (prompt_eval_count includes them)
    "prompt_eval_cached_count": "cached_tokens",
}
# request keys that are not sampling parameters
_NOT_PARAMS = ("model", "prompt", "messages", "stream", "images", "context", "system", "template", "raw", "tools")


def ollama_api_metrics(obj: dict[str, Any]) -> dict[str, Any]:
    """Contract keys of an Ollama final chunk; a field the server omitted stays absent."""
    return {key: obj[src] for src, key in OLLAMA_METRICS.items() if obj.get(src) is not None}


def local_generators(tags: dict[str, Any]) -> list[str]:
    """Names from /api/tags that can generate locally: cloud (remote_host) and embedding-only left out."""
    out = []
    for m in tags.get("models") or []:
        if m.get("remote_host") or m.get("remote_model"):
            continue
        caps = m.get("capabilities")
        if isinstance(caps, list) and "embedding" in caps and "completion" not in caps:
            continue
        name = m.get("name") or m.get("model")
        if name:
            out.append(name)
    return out


def model_meta_from_ollama(name: str, tags: dict[str, Any] | None, show: dict[str, Any] | None) -> dict[str, Any]:
    """digest, parameter_size, quantization_level, family, context_length, capabilities (present ones)."""
    meta: dict[str, Any] = {}
    for m in (tags or {}).get("models") or []:
        if BACKEND.model_id(name) == BACKEND.model_id(m.get("name") or m.get("model") or ""):
            if m.get("digest"):
                meta["digest"] = m["digest"]
            if m.get("size") is not None:
                meta["size_b"] = m["size"]
            details = m.get("details") or {}
            for key in ("parameter_size", "quantization_level", "family", "format"):
                if details.get(key):
                    meta[key] = details[key]
            if details.get("context_length"):
                meta["context_length"] = details["context_length"]
            break
    if show:
        details = show.get("details") or {}
        for key in ("parameter_size", "quantization_level", "family", "format"):
            if details.get(key) and key not in meta:
                meta[key] = details[key]
        info = show.get("model_info") or {}
        arch = info.get("general.architecture")
        if arch and info.get(f"{arch}.context_length") is not None:
            meta["context_length"] = info[f"{arch}.context_length"]
        if info.get("general.parameter_count") is not None:
            meta["parameter_count"] = info["general.parameter_count"]
        if isinstance(show.get("capabilities"), list):
            meta["capabilities"] = show["capabilities"]
    return meta


class OllamaGenerate(Backend):
    name = "ollama"
    family = "ollama"
    path = "/api/generate"
    framing = "ndjson"
    models_path = "/api/tags"
    listing_key = "models"
    done_chunk = True
    can_set_ctx = True
    keeps_alive = True

    def build_payload(self, model: str, prompt: str, p: Params) -> dict[str, Any]:
        options: dict[str, Any] = dict(p.options)
        for key, value in (("temperature", p.temperature), ("top_p", p.top_p), ("num_ctx", p.num_ctx),
                           ("num_predict", p.max_tokens), ("seed", p.seed)):
            if value is not None:
                options[key] = value
        if p.stop:  # replaces the Modelfile's stop list for this request
            options["stop"] = list(p.stop)
        body: dict[str, Any] = {"model": model, "stream": True, "options": options}
        body.update(self._prompt_body(prompt))
        if p.raw and self.path == "/api/generate":  # the prompt as is: no chat template (HumanEval completion)
            body["raw"] = True
        if p.keep_alive is not None:
            body["keep_alive"] = p.keep_alive
        if p.think is not None:
            body["think"] = p.think
        return body

    def _prompt_body(self, prompt: str) -> dict[str, Any]:
        return {"prompt": prompt}

    def _texts(self, obj: dict[str, Any]) -> tuple[str, str]:
        return obj.get("response") or "", obj.get("thinking") or ""

    def map_chunk(self, obj: Any) -> Delta:
        if not isinstance(obj, dict):
            return Delta(error=f"unexpected chunk {str(obj)[:200]}")
        err = error_text(obj)
        if err is not None:
            return Delta(error=err)
        content, thinking = self._texts(obj)
        done = obj.get("done") is True
        return Delta(content=content, thinking=thinking, done=done, api=ollama_api_metrics(obj) if done else {})

    def map_response(self, obj: Any) -> Delta:
        return self.map_chunk(obj)  # a non-streamed answer is one done chunk holding all the text

    def model_id(self, name: str) -> str:
        name = name.strip()
        if ":" not in name.rsplit("/", 1)[-1]:
            return name + ":latest"
        return name

    show_path = "/api/show"

    def model_names(self, listing: dict[str, Any]) -> list[str]:
        return local_generators(listing)

    def can_generate(self, show: dict[str, Any] | None) -> bool:
        caps = (show or {}).get("capabilities")
        return not (isinstance(caps, list) and "embedding" in caps and "completion" not in caps)

    def model_meta(self, name: str, listing: dict[str, Any] | None, show: dict[str, Any] | None) -> dict[str, Any]:
        return model_meta_from_ollama(name, listing, show)

    def missing_fix(self, missing: list[str]) -> str:
        return " ; ".join(f"ollama pull {m}" for m in missing) + " (or fix the names)"

    def wants_stream(self, body: dict[str, Any]) -> bool:
        return body.get("stream") is not False  # Ollama streams unless told not to

    def prompt_of(self, body: dict[str, Any]) -> str:
        prompt = body.get("prompt")
        return prompt if isinstance(prompt, str) else ""

    def params_of(self, body: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k not in _NOT_PARAMS}


BACKEND = OllamaGenerate()
