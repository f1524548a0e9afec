"""Per-request speed figures from req.start / req.first_token / req.end payloads (pure).

toks_per_s (the seed's figure) = eval_count / (eval_duration_ns / 1e9) for Ollama. For
OpenAI-compatible servers: llama.cpp's ``timings`` predicted_n / (predicted_ms / 1000) when the
server sends them, else completion_tokens / client decode time (latency − time to first token).
The method used is named in ``toks_per_s_method``.
"""
from __future__ import annotations

import bisect
import datetime as _dt
from collections.abc import Mapping
from typing import Any

from shared.messages import ClientMetrics, ReqEnd, ReqFirstToken, ReqStart
from shared.numbers import nonneg, positive


def iso_utc(wall_ns: int) -> str:
    """Wall-clock ns → ``2026-01-02T03:04:05.678Z`` (UTC, so the CSV does not depend on the time zone)."""
    t = _dt.datetime.fromtimestamp(wall_ns / 1e9, tz=_dt.timezone.utc)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def timing(start: ReqStart, end: ReqEnd | None, first_tokens: list[ReqFirstToken]) -> dict[str, Any]:
    """latency_s, first_token_s (answer), first_thinking_s, first_chunk_s, in seconds from the
    request's start (req.start, the window's opening; retries included): the collector's figures,
    else the bus events' monotonic stamps (the answering attempt's req.first_token, as the collector counts)."""
    client = (end.client if end is not None else None) or ClientMetrics()
    lat = nonneg(client.latency_s)
    if lat is None and end is not None:
        lat = (end.t - start.t) / 1e9
    last_attempt = max((ft.attempt or 0 for ft in first_tokens), default=0)
    by_kind: dict[str, float] = {}
    for ft in first_tokens:
        if (ft.attempt or 0) == last_attempt:
            by_kind.setdefault(ft.kind, (ft.t - start.t) / 1e9)
    out: dict[str, Any] = {"latency_s": lat}
    for key, value, kind in (("first_token_s", client.first_token_s, "content"),
                             ("first_thinking_s", client.first_thinking_s, "thinking")):
        v = nonneg(value)
        out[key] = v if v is not None else by_kind.get(kind)
    out["first_chunk_s"] = nonneg(client.first_chunk_s)
    if out["first_chunk_s"] is None and by_kind:
        out["first_chunk_s"] = min(by_kind.values())
    return out


def throughput(end: ReqEnd | None, latency_s: float | None, first_token_s: float | None,
               first_chunk_s: float | None) -> dict[str, Any]:
    """Output tokens and tokens/s (server-reported and client-side)."""
    api = (end.api if end is not None else None) or {}
    timings = api.get("timings") or {}
    out: dict[str, Any] = {"output_tokens": None, "toks_per_s": None, "toks_per_s_method": None,
                           "client_toks_per_s": None, "e2e_toks_per_s": None, "prompt_tokens": None,
                           "prefill_toks_per_s": None, "prompt_cached_tokens": None}
    eval_count, eval_ns = nonneg(api.get("eval_count")), positive(api.get("eval_duration_ns"))
    pred_n, pred_ms = nonneg(timings.get("predicted_n")), positive(timings.get("predicted_ms"))
    completion = nonneg(api.get("completion_tokens"))
    tokens = eval_count if eval_count is not None else pred_n if pred_n is not None else completion
    out["output_tokens"] = int(tokens) if tokens is not None else None
    first = first_token_s if first_token_s is not None else first_chunk_s
    decode_s = (latency_s - first) if (latency_s is not None and first is not None and latency_s > first) else None
    if eval_count is not None and eval_ns is not None:
        out["toks_per_s"], out["toks_per_s_method"] = eval_count / (eval_ns / 1e9), "eval_count/eval_duration"
    elif pred_n is not None and pred_ms is not None:
        out["toks_per_s"], out["toks_per_s_method"] = pred_n / (pred_ms / 1000.0), "timings.predicted_n/predicted_ms"
    elif completion is not None and decode_s is not None:
        out["toks_per_s"], out["toks_per_s_method"] = completion / decode_s, "completion_tokens/client_decode_s"
    if tokens is not None and decode_s is not None:
        out["client_toks_per_s"] = tokens / decode_s
    if tokens is not None and latency_s:
        out["e2e_toks_per_s"] = tokens / latency_s
    prompt = nonneg(api.get("prompt_eval_count"))
    if prompt is None:
        prompt = nonneg(api.get("prompt_tokens"))
    out["prompt_tokens"] = int(prompt) if prompt is not None else None
    pe_ns = positive(api.get("prompt_eval_duration_ns"))
    if prompt is not None and pe_ns is not None:
        out["prefill_toks_per_s"] = prompt / (pe_ns / 1e9)
    elif nonneg(timings.get("prompt_n")) is not None and positive(timings.get("prompt_ms")) is not None:
        out["prefill_toks_per_s"] = timings["prompt_n"] / (timings["prompt_ms"] / 1000.0)
    # prompt tokens the server took from its cache (OpenAI usage details, llama.cpp timings.cache_n):
    # those requests skipped most of their prefill, which the report says
    cached = nonneg(api.get("cached_tokens"))
    if cached is None:
        cached = nonneg(timings.get("cache_n"))
    out["prompt_cached_tokens"] = int(cached) if cached is not None else None
    return out


def cold_start(end: ReqEnd | None) -> bool | None:
    """The collector's verdict (client.cold, from load_duration); None when it gave none."""
    return end.client.cold if end is not None and end.client is not None else None


def token_latency(start: ReqStart, end: ReqEnd | None, tm: Mapping[str, Any],
                  output_tokens: int | None) -> tuple[dict[str, Any], list[float]]:
    """TTFT, TPOT, E2EL (ms) and the inter-token latencies, as vLLM's ``bench serve`` and AIPerf define them.

    ttft_ms: request start → first token (answer or thinking; else the first chunk).
    e2el_ms: request start → end of the stream (latency_s).
    tpot_ms: (E2EL − TTFT) / (output tokens − 1); needs at least 2 output tokens.
    ITL: every gap between consecutive chunk arrivals (client.chunk_t_ns) from the first token's
    chunk on; returned as a list (pooled per group in stats.csv) with its mean and max per request.
    """
    out: dict[str, Any] = {"ttft_ms": None, "tpot_ms": None, "e2el_ms": None, "itl_ms_mean": None,
                           "itl_ms_max": None}
    if end is None:
        return out, []
    firsts = [v for v in (tm.get("first_token_s"), tm.get("first_thinking_s")) if v is not None]
    ttft_s = min(firsts) if firsts else tm.get("first_chunk_s")
    lat = tm.get("latency_s")
    out["ttft_ms"] = ttft_s * 1000.0 if ttft_s is not None else None
    out["e2el_ms"] = lat * 1000.0 if lat is not None else None
    if ttft_s is not None and lat is not None and output_tokens is not None and output_tokens >= 2 and lat >= ttft_s:
        out["tpot_ms"] = (lat - ttft_s) * 1000.0 / (output_tokens - 1)
    chunks = sorted(map(int, (end.client.chunk_t_ns if end.client else None) or []))
    if ttft_s is not None:
        # 1 µs slack: ttft_s went through a float division of the same ns stamps.
        first_ns = start.t + round(ttft_s * 1e9) - 1000
        del chunks[:bisect.bisect_left(chunks, first_ns)]  # (sorted: the earlier ones are a head)
    itl = [(b - a) / 1e6 for a, b in zip(chunks, chunks[1:])]
    if itl:
        out["itl_ms_mean"], out["itl_ms_max"] = sum(itl) / len(itl), max(itl)
    return out, itl
