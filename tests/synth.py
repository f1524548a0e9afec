"""Synthetic batch recordings with analytically known energy, written as real files through
shared.messages.Stamper and shared.recording.RecordingWriter (the same path the collector uses).

Time in the specs is seconds after the recording's origin ``T0_NS`` (monotonic clock).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from shared import messages as M
from shared.batch import BatchDir
from shared.recording import RecordingWriter

T0_NS = 5_000_000_000_000      # an arbitrary monotonic origin (about 83 min of uptime)
WALL0_NS = 1_790_000_000_000_000_000  # wall clock at T0 (2026-09-21)


@dataclass(frozen=True)
class Power:
    """A power trace P(t) in W and its exact integral E(t) = ∫_0^t P in J."""

    p_w: Callable[[float], float]
    e_j: Callable[[float], float]


def constant(w: float) -> Power:
    return Power(lambda t: w, lambda t: w * t)


def ramp(w0: float, slope_w_per_s: float) -> Power:
    return Power(lambda t: w0 + slope_w_per_s * t, lambda t: w0 * t + 0.5 * slope_w_per_s * t * t)


def square(high_w: float, low_w: float, period_s: float) -> Power:
    """High for the first half of each period, low for the second."""
    half = period_s / 2

    def p(t: float) -> float:
        return high_w if (t % period_s) < half else low_w

    def e(t: float) -> float:
        k, r = divmod(t, period_s)
        return k * half * (high_w + low_w) + min(r, half) * high_w + max(r - half, 0.0) * low_w

    return Power(p, e)


def sine(mean_w: float, amp_w: float, period_s: float) -> Power:
    w = 2 * math.pi / period_s
    return Power(lambda t: mean_w + amp_w * math.sin(w * t),
                 lambda t: mean_w * t + amp_w * (1 - math.cos(w * t)) / w)


def pulses(idle_w: float, bursts: list[tuple[float, float, float]]) -> Power:
    """``idle_w`` with rectangular bursts (start_s, length_s, watts), disjoint: decode steps, prefills."""

    def p(t: float) -> float:
        return next((w for start, length, w in bursts if start <= t < start + length), idle_w)

    def e(t: float) -> float:
        return idle_w * t + sum((w - idle_w) * min(max(t - start, 0.0), length) for start, length, w in bursts)

    return Power(p, e)


@dataclass
class Gpu:
    power: Power
    counter: bool = True            # publish energy_mj (refreshing every refresh_s)
    publish_power: bool = True
    refresh_s: float = 0.05
    simulated: bool = True
    util_pct: float = 50.0
    mem_mib: float = 4000.0
    temp_c: float = 60.0
    name: str = "Synth GPU"
    uuid: str | None = None         # default GPU-synth-<index>
    refresh_phase_s: float = 0.0    # the counter refreshes at phase + k·refresh_s
    hold_s: float = 0.0             # power reading held between the GPU's own refreshes (0: read fresh)


@dataclass
class Req:
    a_s: float
    b_s: float
    model: str = "m1"
    task: str = "qa"
    load: str = "short"
    run: int = 0
    warmup: bool = False
    ok: bool = True
    end: bool = True                # False: req.start only (incomplete)
    eval_count: int = 100
    eval_duration_ns: int = 1_000_000_000
    text: str = "an answer"
    case: int = 0
    rid: str | None = None
    error: str = "HTTP 500 from server"  # the error text of a failed request (ok=False)
    chunk_s: list[float] | None = None  # chunk arrivals after a_s (the first is the first token); None: none sent
    prompt_eval_count: int | None = None
    case_hash: str | None = None    # req.start case_hash (None: not sent, as older collectors)
    max_tokens: int | None = None   # req.start params.max_tokens
    seed: int | None = None         # req.start params.seed
    sweep: str | None = None        # req.start sweep / sweep_level (a --sweep batch; Spec.load says swept)
    sweep_level: float | None = None


@dataclass
class Spec:
    duration_s: float = 10.0
    rate_hz: float = 100.0
    phase_s: float = 0.003          # samples at phase + k/rate, so windows fall between samples
    dither: bool = False            # add frac(k·golden ratio)/rate to each sample time, as the daemon does
    gpus: list[Gpu] = field(default_factory=lambda: [Gpu(constant(100.0))])
    cpu_pct: Callable[[float], float] = lambda t: 25.0
    rapl_w: float | None = None     # package power in W → rapl_uj counter
    server_cores: float | None = None  # the LLM server's CPU use in cores → server_cpu_s (8-core host)
    server_found_s: float = 0.0     # the daemon finds the server's process at this time (no server_cpu_s before)
    requests: list[Req] = field(default_factory=list)
    drop_telemetry_seqs: set[int] = field(default_factory=set)
    batch_id: str = "experiments_1_20260101_000000"
    cases: list[dict[str, Any]] = field(default_factory=lambda: [{"prompt": "q?", "task": "qa", "load": "short",
                                                                   "reference_text": "ref"}])
    batch_end: bool = True
    interrupted: bool = False       # batch.end says the batch was stopped early
    planned: int | None = None      # batch.start's count of planned requests
    config: dict[str, Any] = field(default_factory=lambda: {"runs": {"value": 1, "source": "default"}})
    hb_every_s: float = 1.0
    tel_src: str = "telemetry@synth"  # the daemon's publisher id: its host part names the GPUs' host
    wall0_ns: int = WALL0_NS        # wall clock at T0 (the batch's date)
    base_url: str | None = None     # batch.start base_url (the LLM server's address)
    backend: str = "ollama"         # batch.start backend ("proxy" for a proxy batch)
    load: dict[str, Any] | None = None  # batch.start load (e.g. {"swept": True} for a --sweep batch)


def rid_of(spec: Spec, i: int, r: Req) -> str:
    return r.rid or f"{spec.batch_id}/{r.model}/{r.case}/{r.load}/{r.run}-{i}"


def messages(spec: Spec) -> list[tuple[str, dict[str, Any]]]:
    """All messages of a batch, in recording order (events and telemetry merged by time)."""
    tel = M.Stamper(spec.tel_src)
    col = M.Stamper("collector@synth")
    out: list[tuple[int, int, str, dict]] = []

    def ns(t_s: float) -> int:
        return T0_NS + int(round(t_s * 1e9))

    def add(stamper, topic, body, t_s, order=0):
        t = ns(t_s)
        p = stamper.stamp(body, t=t, wall=spec.wall0_ns + (t - T0_NS))
        out.append((t, order, topic, p))

    # Telemetry must be stamped in time order so seq rises with t.
    n = int(spec.duration_s * spec.rate_hz)
    next_hb = 0.0
    for k in range(n):
        t = spec.phase_s + (k + (((k * 0.6180339887498949) % 1.0) if spec.dither else 0.0)) / spec.rate_hz
        for gi, g in enumerate(spec.gpus):
            body: dict[str, Any] = {"gpu": gi, "uuid": g.uuid or f"GPU-synth-{gi}", "name": g.name,
                                    "util_gpu_pct": g.util_pct, "mem_used_mib": g.mem_mib, "mem_total_mib": 24000.0,
                                    "temp_c": g.temp_c + 10 * (t / spec.duration_s), "sm_clock_mhz": 1800.0,
                                    "power_kind": "sim" if g.simulated else "instant"}
            if g.publish_power:
                held = math.floor(t / g.hold_s) * g.hold_s if g.hold_s > 0 else t
                body["power_mw"] = g.power.p_w(held) * 1000.0
            if g.counter:
                ph = g.refresh_phase_s
                refreshed = ph + math.floor((t - ph) / g.refresh_s) * g.refresh_s
                body["energy_mj"] = int(round(g.power.e_j(refreshed) * 1000.0))
            if g.simulated:
                body["simulated"] = True
            add(tel, M.TEL_GPU, body, t)
        host: dict[str, Any] = {"cpu_pct": spec.cpu_pct(t), "mem_used_mib": 8000.0 + t, "mem_total_mib": 32000.0,
                                "procs": {"ollama": {"pid": 42, "cpu_pct": 10.0, "rss_mib": 500.0 + t}}}
        if spec.server_cores is not None:
            host.update(cpu_count=8, server_port=11434)
            if t >= spec.server_found_s:
                host.update(server_pids=[42, 43], server_cpu_s=spec.server_cores * t)
        if spec.rapl_w is not None:
            host["rapl_uj"] = {"package-0": int(round(spec.rapl_w * t * 1e6)), "core": int(round(spec.rapl_w * 0.5 * t * 1e6))}
        add(tel, M.TEL_HOST, host, t)
        if t >= next_hb:
            add(tel, M.TEL_HB, {"gpu_source": "sim", "simulated": True, "gpus": len(spec.gpus), "uptime_s": t}, t)
            next_hb += spec.hb_every_s
    # Collector events.
    add(col, M.BATCH_START, {"batch": spec.batch_id, "config": spec.config,
                             "cases": spec.cases, "models": {"m1": {"family": "synth", "parameter_size": "1B"}},
                             "backend": spec.backend, **({"planned": spec.planned} if spec.planned else {}),
                             **({"base_url": spec.base_url} if spec.base_url else {}),
                             **({"load": spec.load} if spec.load else {})},
        0.0005, order=-1)
    events = []
    for i, r in enumerate(spec.requests):
        rid = rid_of(spec, i, r)
        events.append((r.a_s, M.REQ_START, {"rid": rid, "model": r.model, "task": r.task, "load": r.load, "run": r.run,
                                             "case": r.case, "warmup": r.warmup,
                                             "prompt": (spec.cases[r.case] if r.case < len(spec.cases) else {}).get("prompt", "q?"),
                                             "params": {"temperature": 0.7,
                                                        **({"max_tokens": r.max_tokens} if r.max_tokens else {}),
                                                        **({"seed": r.seed} if r.seed is not None else {})},
                                             **({"case_hash": r.case_hash} if r.case_hash else {}),
                                             **({"sweep": r.sweep, "sweep_level": r.sweep_level}
                                                if r.sweep_level is not None else {})}))
        if r.end:
            lat = r.b_s - r.a_s
            first_s = r.chunk_s[0] if r.chunk_s else 0.1 * lat
            events.append((r.a_s + first_s, M.REQ_FIRST_TOKEN, {"rid": rid, "kind": "content"}))
            end: dict[str, Any] = {"rid": rid, "ok": r.ok, "text": r.text if r.ok else "",
                                   "api": {"eval_count": r.eval_count, "eval_duration_ns": r.eval_duration_ns,
                                           "load_duration_ns": 1000},
                                   "client": {"latency_s": lat, "first_token_s": first_s, "cold": False}}
            if r.chunk_s:
                end["client"].update(first_chunk_s=first_s, chunks=len(r.chunk_s),
                                     chunk_t_ns=[ns(r.a_s + c) for c in r.chunk_s])
            if r.prompt_eval_count is not None:
                end["api"]["prompt_eval_count"] = r.prompt_eval_count
            if not r.ok:
                end["error"], end["error_kind"] = r.error, "busy"
            events.append((r.b_s, M.REQ_END, end))
    for t_s, topic, body in sorted(events, key=lambda e: e[0]):
        add(col, topic, body, t_s)
    if spec.batch_end:
        add(col, M.BATCH_END, {"batch": spec.batch_id, "requests": len(spec.requests),
                               "interrupted": spec.interrupted}, spec.duration_s)
    out.sort(key=lambda m: (m[0], m[1]))
    return [(topic, p) for _, _, topic, p in out
            if not (p["src"] == spec.tel_src and p["seq"] in spec.drop_telemetry_seqs)]


def write_batch(root: Path, spec: Spec) -> BatchDir:
    """A batch directory whose raw/stream.msgpack holds ``messages(spec)``."""
    bd = BatchDir(Path(root))  # RecordingWriter creates raw/; the analyzer makes the rest
    with RecordingWriter(bd.stream, meta={"batch": spec.batch_id}) as w:
        for topic, payload in messages(spec):
            w.write(topic, payload)
    return bd


def tiny_spec() -> Spec:
    """The batch stored in tests/data/analyzer_batch: 2 models × 3 tasks × 2 runs, a warm-up, overlapping
    windows, a failed request, 20 Hz telemetry with a counter GPU (simulated), RAPL and a Chinese answer."""
    cases = [
        {"prompt": "What is the capital of France?", "task": "qa", "load": "short", "lang": "en",
         "reference_text": "Paris is the capital of France."},
        {"prompt": "Write binary_search(a, x) in Python.", "task": "code", "load": "short",
         "expect": {"symbols": ["binary_search"], "complexity": "O(log n)", "entry": "binary_search",
                    "tests": "assert binary_search([1, 2, 3], 2) == 1"}},
        {"prompt": "写一段关于人工智能的短文。", "task": "creative", "load": "short", "lang": "zh"},
    ]
    code = "```python\ndef binary_search(a, x):\n    lo, hi = 0, len(a) - 1\n    while lo <= hi:\n" \
           "        mid = (lo + hi) // 2\n        if a[mid] == x:\n            return mid\n" \
           "        if a[mid] < x:\n            lo = mid + 1\n        else:\n            hi = mid - 1\n" \
           "    return -1\n```\nThis runs in O(log n)."
    texts = {0: "Paris is the capital of France.", 1: code, 2: "人工智能正在改变世界，它让机器学会思考与创造。"}
    reqs = [Req(0.3, 0.6, model="tiny-a:1b", warmup=True, rid="warmup/tiny-a:1b")]
    t = 1.0
    for run in range(2):
        for case in range(3):
            for mi, model in enumerate(("tiny-a:1b", "tiny-b:3b")):
                dur = 0.5 + 0.3 * mi + 0.1 * case
                ok = not (run == 1 and case == 2 and mi == 1)
                reqs.append(Req(t, t + dur, model=model, task=cases[case]["task"], run=run, case=case, ok=ok,
                                text=texts[case], eval_count=40 + 10 * case + 20 * mi,
                                eval_duration_ns=int(dur * 0.8e9), rid=f"tiny/{model}/{case}/short/{run}"))
                t += dur * 0.7  # the next request starts before this one ends: concurrency
    return Spec(duration_s=t + 1.5, rate_hz=20.0, phase_s=0.013,
                gpus=[Gpu(square(180.0, 60.0, 1.3), refresh_s=0.1)], rapl_w=35.0,
                cpu_pct=lambda x: 30.0 + 10.0 * math.sin(x), requests=reqs, batch_id="tiny", cases=cases)


if __name__ == "__main__":  # python -m tests.synth OUT_DIR: rewrite the stored tiny batch
    import sys

    write_batch(Path(sys.argv[1]), tiny_spec())


def hostile(items: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    """Messages that break the contract in ways a lax reader crashes on, each a copy of one in ``items``
    (a seq of its own, so none is a duplicate): a ``src`` that is a map or a list (unhashable), and
    integers beyond 64 bits (msgpack carries up to 2**64 - 1) in the envelope and in keys declared int."""
    first = {}
    for topic, p in items:
        first.setdefault(topic, p)
    gpu, host, end = first[M.TEL_GPU], first[M.TEL_HOST], first[M.REQ_END]
    big = 2**64 - 1
    seq = iter(range(900_000, 901_000))
    probe = {"v": M.SCHEMA_VERSION, "src": end["src"], "t": end["t"], "wall": end["wall"],
             "source": gpu["src"], "sent_ns": big, "received_ns": end["t"], "remote_ns": gpu["t"]}
    bad = [(M.TEL_GPU, {**gpu, "src": {"daemon": 1}}), (M.TEL_HOST, {**host, "src": [1, 2]}),
           (M.REQ_END, {**end, "src": {"collector": 1}}),
           (M.TEL_GPU, {**gpu, "t": big}), (M.TEL_GPU, {**gpu, "seq": 2**63}), (M.TEL_GPU, {**gpu, "gpu": big}),
           (M.TEL_HOST, {**host, "wall": big}), (M.TEL_HOST, {**host, "disk_read_b": big}),
           (M.REQ_END, {**end, "t": big}), (M.REQ_END, {**end, "client": {**(end.get("client") or {}), "chunks": big}}),
           (M.CLOCK_SYNC, probe)]
    return [(topic, {**p, "seq": next(seq)} if p.get("seq") != 2**63 else p) for topic, p in bad]
