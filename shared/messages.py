"""The versioned message contract: one typed definition per topic. Pure: no sockets, no files.

A bus message is ``[topic, payload]``; the payload is one flat msgpack map: the envelope ``v``
(schema version), ``src`` (publisher id), ``seq`` (+1 per message per publisher), ``t``
(``shared.timebase.now_ns()`` when the reading was taken) and ``wall`` (``time.time_ns()``), then the
topic's own keys, each declared once below with its type and unit. Producers build a body class
and send ``body.to_msg()``; readers get a typed object from ``Class.from_msg(payload)``;
``validate`` checks any payload at the boundary. docs/contract.md is generated from this file
(``python -m shared.contract``). Absent means not available, never a fake zero.
"""
from __future__ import annotations

import dataclasses
import itertools
import socket
import time
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

import msgpack

from shared import timebase

# v2: req.end client.chunk_t became chunk_t_ns (unit in the name); client seconds count from the
# request's start (v1: from the answering attempt's); req.first_token is sent per attempt.
# v1 recordings still read.
SCHEMA_VERSION = 2
READABLE_VERSIONS = (1, 2)


TEL_GPU = "tel.gpu"
TEL_HOST = "tel.host"
TEL_HB = "tel.hb"
REQ_START = "req.start"
REQ_FIRST_TOKEN = "req.first_token"
REQ_END = "req.end"
REQ_PROGRESS = "req.progress"
BATCH_START = "batch.start"
BATCH_END = "batch.end"
CLOCK_SYNC = "clock.sync"
ANA_ROW = "ana.row"

ENVELOPE_KEYS = ("v", "src", "seq", "t", "wall")
ENVELOPE_INTS = ("seq", "t", "wall")

# A key declared int holds a signed 64-bit integer (readers keep them as int64 arrays); msgpack also
# carries 2**63 .. 2**64 - 1, refused like a wrong type.
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1


def is_int64(v: Any) -> bool:
    """``v`` is an integer (not a bool) that fits in 64 bits: what the contract's int keys hold."""
    return isinstance(v, int) and not isinstance(v, bool) and INT64_MIN <= v <= INT64_MAX


# req.progress: at most one per request per this interval while it streams (bounded bus load).
PROGRESS_EVERY_NS = 500_000_000

# A payload bigger than this is dropped unread (counted by the receiver), never unpacked.
MAX_PAYLOAD_BYTES = 4 * 1024 * 1024


class MessageError(ValueError):
    """A payload that does not follow the contract; the message says which key and why."""


def now_ns() -> tuple[int, int]:
    """Return ``(t, wall)``: the host's shared clock in ns (shared.timebase; joins windows) and wall-clock ns (for humans)."""
    return timebase.now_ns(), time.time_ns()


def source_id(role: str) -> str:
    """Publisher id such as ``telemetry@myhost``."""
    return f"{role}@{socket.gethostname()}"


def src_host(src: str | None) -> str | None:
    """The host part of a publisher id (``telemetry@gpu-box`` → ``gpu-box``); None without one."""
    if not src or "@" not in str(src):
        return None
    return str(src).split("@", 1)[1] or None


class Stamper:
    """Adds the envelope to message bodies of one publisher, numbering them 0, 1, 2, ..."""

    def __init__(self, src: str, first_seq: int = 0):
        self.src = src
        self._seq = itertools.count(first_seq)

    def stamp(self, body: dict[str, Any], t: int | None = None, wall: int | None = None) -> dict[str, Any]:
        """Return a new payload: the envelope first, then ``body``. ``t``/``wall`` default to now."""
        if t is None:
            t, wall_now = now_ns()
            wall = wall_now if wall is None else wall
        elif wall is None:
            # Keep wall consistent with a caller-supplied stamp on the shared clock.
            wall = time.time_ns() - (timebase.now_ns() - t)
        payload = {"v": SCHEMA_VERSION, "src": self.src, "seq": next(self._seq), "t": t, "wall": wall}
        payload.update(body)
        return payload


def encode(payload: dict[str, Any]) -> bytes:
    """msgpack bytes of one payload."""
    return msgpack.packb(payload, use_bin_type=True)


def decode(data: bytes, max_bytes: int = MAX_PAYLOAD_BYTES) -> dict[str, Any]:
    """Unpack one payload, refusing oversize input before allocating anything for it."""
    if len(data) > max_bytes:
        raise MessageError(f"payload of {len(data)} bytes is over the {max_bytes}-byte limit; dropped")
    try:
        payload = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types
        raise MessageError(f"payload is not valid msgpack: {exc}") from exc
    if not isinstance(payload, dict):
        raise MessageError(f"payload must be a msgpack map, got {type(payload).__name__}")
    return payload



# ---------------------------------------------------------------------------------------------
# The bodies. ``doc`` says what a key holds; the unit is in its name. ``required`` keys must be
# present; the rest are optional (absent = not available). Two flags tell the analyzer how to keep a
# telemetry key per sample (its column readers come from them, never from a hand list):
# ``series``: a numeric reading kept as a float64 array over time per source, NaN where absent
# (``Record.series_keys``: GPU_SERIES, HOST_SERIES); ``label``: text kept per sample as codes
# (``Record.label_keys``: the GPU's identity and kind).

def _k(doc: str, *, required: bool = False, default: Any = None, series: bool = False, label: bool = False) -> Any:
    return field(default=default, metadata={"doc": doc, "required": required, "series": series, "label": label})


@dataclass(frozen=True)
class _Check:
    name: str
    types: tuple[type, ...]
    no_bool: bool               # an int/float key refuses True/False (bool is an int in Python)
    int64: bool                 # declared int: its integers must fit in 64 bits (INT64_MIN..INT64_MAX)
    nested: type | None         # a Record class parsed from a nested map
    required: bool


_SCALARS = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def _check_for(name: str, hint: Any, required: bool) -> _Check:
    args = ([a for a in typing.get_args(hint) if a is not type(None)]
            if typing.get_origin(hint) in (typing.Union, types.UnionType) else [hint])
    allowed: list[type] = []
    nested = None
    for a in args:
        origin = typing.get_origin(a) or a
        if isinstance(origin, type) and issubclass(origin, Record):
            nested = origin
            allowed.append(dict)
        elif origin in _SCALARS:
            allowed.extend(_SCALARS[origin])
        elif origin in (dict, list):
            allowed.append(origin)
        else:  # Any
            allowed.append(object)
    no_bool = bool not in args and any(t in (int, float) for t in allowed)
    return _Check(name, tuple(dict.fromkeys(allowed)), no_bool, int in args, nested, required)


@dataclass(kw_only=True, slots=True)
class Record:
    """A typed map of the contract: declared keys, checked types, ``to_msg``/``from_msg``."""

    ALIASES: ClassVar[dict[str, str]] = {}      # key in an older schema -> key now
    _ENVELOPE: ClassVar[tuple[str, ...]] = ()


    @classmethod
    def checks(cls) -> tuple[_Check, ...]:
        got = cls.__dict__.get("_checks")
        if got is None:
            hints = typing.get_type_hints(cls)
            got = tuple(_check_for(f.name, hints[f.name], f.metadata.get("required", False))
                        for f in dataclasses.fields(cls) if f.name not in ENVELOPE_KEYS)
            cls._checks = got  # type: ignore[attr-defined]
        return got

    @classmethod
    def keys(cls) -> tuple[str, ...]:
        return tuple(c.name for c in cls.checks())

    @classmethod
    def int64_keys(cls) -> tuple[str, ...]:
        """The keys whose integers must fit in 64 bits: the envelope's ``seq``/``t``/``wall`` (a body's)
        and every key declared int."""
        got = cls.__dict__.get("_int64_keys")
        if got is None:
            got = (ENVELOPE_INTS if cls._ENVELOPE else ()) + tuple(c.name for c in cls.checks() if c.int64)
            cls._int64_keys = got  # type: ignore[attr-defined]
        return got

    @classmethod
    def series_keys(cls) -> tuple[str, ...]:
        """The keys declared ``series=True``, in declaration order (a subclass's after its base's)."""
        return cls._flagged("series", (int, float))

    @classmethod
    def label_keys(cls) -> tuple[str, ...]:
        """The keys declared ``label=True``, in declaration order."""
        return cls._flagged("label", (str,))

    @classmethod
    def _flagged(cls, flag: str, scalars: tuple[type, ...]) -> tuple[str, ...]:
        cache = f"_{flag}_keys"
        got = cls.__dict__.get(cache)
        if got is None:
            checks = {c.name: c for c in cls.checks()}
            got = tuple(f.name for f in dataclasses.fields(cls) if f.metadata.get(flag))
            for name in got:  # a flag on a key of another type is a slip in this file: say so at import
                c = checks[name]
                if c.nested is not None or not set(c.types) <= set(scalars):
                    raise TypeError(f"{cls.__name__}.{name}: declared {flag}=True but typed "
                                    f"{'/'.join(t.__name__ for t in c.types)}; a {flag} key is "
                                    f"{'/'.join(t.__name__ for t in scalars)} (shared/messages.py)")
            setattr(cls, cache, got)
        return got

    @classmethod
    def declared(cls, *names: str) -> tuple[str, ...]:
        """``names`` unchanged when each is a declared key of this body, else a KeyError naming it:
        readers name the keys they read through this once, at import, so a renamed key fails there."""
        missing = [n for n in names if n not in cls.keys() and n not in cls._ENVELOPE]
        if missing:
            raise KeyError(f"{cls.__name__} declares no key {missing[0]!r}: declare it in shared/messages.py "
                           f"or read another ({', '.join(cls.keys())})")
        return names

    @classmethod
    def check(cls, payload: dict[str, Any], where: str | None = None, strict: bool = False) -> None:
        """Raise MessageError naming the key when a required key is missing or a key has the wrong
        type. ``strict`` also refuses keys the contract does not declare (used on our own producers)."""
        where = where or getattr(cls, "TOPIC", cls.__name__)
        for c in cls.checks():
            v = payload.get(c.name)
            if v is None:
                if c.required:
                    raise MessageError(f"{where}: missing key {c.name!r}")
                continue
            if not isinstance(v, c.types) or (c.no_bool and v.__class__ is bool):
                raise MessageError(f"{where}: key {c.name!r} must be {'/'.join(t.__name__ for t in c.types)}, "
                                   f"got {type(v).__name__} {v!r:.60}")
            if c.int64 and isinstance(v, int) and not INT64_MIN <= v <= INT64_MAX:  # (an int | str key's text passes)
                raise MessageError(f"{where}: key {c.name!r} is beyond the 64-bit integer range, got {v!r}")
            if c.nested is not None:
                c.nested.check(v, f"{where}.{c.name}", strict)
        if strict:
            known = set(cls.keys()) | set(ENVELOPE_KEYS) | set(cls.ALIASES)
            unknown = sorted(str(k) for k in payload if k not in known)
            if unknown:
                raise MessageError(f"{where}: keys not in the contract: {unknown} (declare them in shared/messages.py)")

    def to_msg(self) -> dict[str, Any]:
        """The payload map: set keys only (None = absent), nested bodies as maps."""
        out: dict[str, Any] = {}
        for name in self._ENVELOPE + self.keys():
            v = getattr(self, name)
            if v is not None:
                out[name] = v.to_msg() if isinstance(v, Record) else v
        return out

    @classmethod
    def from_msg(cls, payload: dict[str, Any], check: bool = True):
        """A typed object from a payload (checked; older aliases mapped; unknown keys ignored).
        ``check=False``: a payload checked already (an analyzer's copy of messages it checked as it read them)."""
        if cls.ALIASES:
            payload = {cls.ALIASES.get(k, k): v for k, v in payload.items()}
        if check:
            cls.check(payload)
        kw: dict[str, Any] = {}
        for c in cls.checks():
            v = payload.get(c.name)
            if v is not None:
                kw[c.name] = c.nested.from_msg(v, check) if c.nested is not None else v
        for name in cls._ENVELOPE:
            if name in payload:
                kw[name] = payload[name]
        return cls(**kw)


@dataclass(kw_only=True, slots=True)
class Body(Record):
    """A topic's payload. The envelope keys are filled by ``from_msg`` (None on a body a producer
    builds: the publisher's Stamper adds them)."""

    TOPIC: ClassVar[str] = ""
    _ENVELOPE: ClassVar[tuple[str, ...]] = ENVELOPE_KEYS

    v: int | None = _k("schema version")
    src: str | None = _k("publisher id, e.g. `telemetry@host`")
    seq: int | None = _k("per-publisher sequence number, +1 per message (a gap = lost messages)")
    t: int | None = _k("`shared.timebase.now_ns()` (the host's shared clock) when the reading was taken (windows join on it)")
    wall: int | None = _k("`time.time_ns()` at the same moment (for people and cross-host joins)")


@dataclass(kw_only=True, slots=True)
class TelGpu(Body):
    """One GPU, one tick. Power and energy every tick; the slower fields every `--gpu-slow-hz` tick."""
    TOPIC: ClassVar[str] = TEL_GPU
    gpu: int = _k("GPU index on its host", required=True)
    uuid: str | None = _k("GPU UUID (stable across reboots)", label=True)
    name: str | None = _k("GPU product name", label=True)
    driver: str | None = _k("the GPU driver's version (NVML), where known", label=True)
    power_kind: str | None = _k("what power_mw is: `instant` | `average_1s` | `unknown` | `sim`", label=True)
    power_mw: float | None = _k("board power, milliwatts", series=True)
    energy_mj: float | None = _k("NVML total-energy counter, millijoules since the driver loaded (Volta and newer)",
                                 series=True)
    util_gpu_pct: float | None = _k("SM utilisation, %", series=True)
    util_mem_pct: float | None = _k("memory-controller utilisation, %", series=True)
    mem_used_mib: float | None = _k("device memory used, MiB", series=True)
    mem_total_mib: float | None = _k("device memory total, MiB", series=True)
    temp_c: float | None = _k("GPU temperature, °C", series=True)
    sm_clock_mhz: float | None = _k("SM clock, MHz", series=True)
    pstate: str | None = _k("performance state, e.g. `P0`")
    power_limit_w: float | None = _k("enforced board power limit, W (NVML; a user cap shows here)")
    procs: dict[int, float] | None = _k("{pid: device memory used, MiB} of processes on this GPU")
    simulated: bool | None = _k("true on every message of the simulated GPU source")
    errors: list[str] | None = _k("`field: code` for each field whose read failed this tick")


# The numeric tel.gpu keys the analyzer turns into sample arrays (declared series=True above).
GPU_SERIES = TelGpu.series_keys()


@dataclass(kw_only=True, slots=True)
class TelHost(Body):
    """The host, one tick (psutil, RAPL). Byte counters are cumulative since boot."""
    TOPIC: ClassVar[str] = TEL_HOST
    cpu_pct: float = _k("host CPU utilisation over the last tick, % of all cores", required=True, series=True)
    cpu_pct_per_core: list[float] | None = _k("the same per core, %")
    mem_used_mib: float | None = _k("host memory used (total − available), MiB", series=True)
    mem_total_mib: float | None = _k("host memory total, MiB", series=True)
    swap_used_mib: float | None = _k("swap used, MiB", series=True)
    disk_read_b: int | None = _k("bytes read from disks, cumulative")
    disk_write_b: int | None = _k("bytes written to disks, cumulative")
    net_sent_b: int | None = _k("bytes sent on all interfaces, cumulative")
    net_recv_b: int | None = _k("bytes received on all interfaces, cumulative")
    rapl_uj: dict[str, int] | None = _k("{zone: cumulative RAPL energy, µJ}, wraps already unwrapped; zone = `<dir>/<name>`, "
                                               "e.g. `intel-rapl:0/package-0`")
    procs: dict[str, dict] | None = _k("{watched name: {pid (lowest), pids, cpu_pct, rss_mib}} summed over the "
                                       "running processes of that name")
    cpu_count: int | None = _k("logical CPUs of the host (cpu_pct is a share of all of them)", series=True)
    server_port: int | None = _k("TCP port of the LLM server the daemon watches (`--server-port`)")
    server_pids: list[int] | None = _k("the process listening on server_port and its children (e.g. Ollama's "
                                       "runners)")
    server_cpu_s: float | None = _k("user + system CPU time of those processes, s, cumulative (processes that "
                                    "exited keep their last figure)", series=True)


# The numeric tel.host keys the analyzer turns into sample arrays (declared series=True above).
HOST_SERIES = TelHost.series_keys()


@dataclass(kw_only=True, slots=True)
class TelHb(Body):
    """Daemon heartbeat, about once a second."""
    TOPIC: ClassVar[str] = TEL_HB
    sources: dict[str, dict] | None = _k("{source: {target_hz, achieved_hz (since the last heartbeat), "
                                         "jitter_ms_p50, jitter_ms_p99 (start delay after the deadline), "
                                         "dropped_ticks, samples, errors (cumulative), rate_ratio (ticks run "
                                         "of ticks due since the last heartbeat), rate_low (rate_ratio < 0.95)}}")
    gpu_source: str | None = _k("`nvml` | `sim` | `none`")
    simulated: bool | None = _k("true when any GPU is simulated")
    gpus: int | None = _k("number of GPUs sampled")
    uptime_s: float | None = _k("seconds since the daemon started")
    boot_id: str | None = _k("the daemon host's boot id (Linux; absent elsewhere): equal to the collector's = one clock")
    clock_port: int | None = _k("TCP port of the daemon's clock probe endpoint (REQ/REP, on the telemetry host)")
    clock: str | None = _k("the OS clock every stamp reads (shared.timebase), e.g. "
                           "`perf_counter: clock_gettime(CLOCK_MONOTONIC), 1e-09 s`")


@dataclass(kw_only=True, slots=True)
class ReqStart(Body):
    """A request (or a warm-up) is sent. Its window opens at this message's `t`."""
    TOPIC: ClassVar[str] = REQ_START
    rid: str = _k("request id, deterministic: `batch/model/case/load/run`; the measuring proxy's: "
                  "`batch/model/{n:06d}-task/tag/1`, n counting its requests (unique per request)", required=True)
    model: str | None = _k("model name as asked of the server")
    task: str | None = _k("`qa` | `summary` | `code` | `creative` | other task types")
    load: str | None = _k("`short` | `medium` | `long`")
    run: int | None = _k("repetition number, from 1 (0 for a warm-up)")
    case: int | None = _k("index into batch.start `cases`")
    case_hash: str | None = _k("hash of the case's content")
    warmup: bool | None = _k("true for a warm-up request (not in results)")
    prompt: str | None = _k("the prompt sent")
    params: dict[str, Any] | None = _k("generation parameters sent (temperature, top_p, num_ctx, max_tokens, "
                                       "seed, keep_alive, think)")
    sweep: str | None = _k("load sweep kind: `concurrency` (parallel streams) | `rate` (open-loop requests/s); "
                           "absent outside a sweep")
    sweep_level: float | None = _k("the sweep level this request ran at (e.g. 4 streams, 0.5 requests/s)")
    start_lag_ms: float | None = _k("open loop: how much later than its scheduled arrival the request started, ms")
    start_blocked: bool | None = _k("open loop: true when the start waited for a --max-concurrency slot")
    prompt_note: dict[str, Any] | None = _k("measuring proxy: the prompt is not stored whole: {chars, bytes, sha256, "
                                            "truncated, limit_bytes} or {..., stored: false} (--no-text)")
    proxy: dict[str, Any] | None = _k("measuring proxy: {path, stream, usage_added} of the client's request")


@dataclass(kw_only=True, slots=True)
class ReqFirstToken(Body):
    """The first streamed token of a kind arrived in an attempt (`t` = its arrival). A retried
    request sends one per attempt; the last attempt's is the request's."""
    TOPIC: ClassVar[str] = REQ_FIRST_TOKEN
    rid: str = _k("request id", required=True)
    kind: str = _k("`content` (answer) | `thinking`", required=True)
    attempt: int | None = _k("which attempt of the request (0 = first; retries count up)")


@dataclass(kw_only=True, slots=True)
class ClientMetrics(Record):
    """What the collector's clock saw of a request (the `client` map of req.end). Seconds count from
    the request's start, the req.start instant that opens the energy window, retries included
    (schema v1 counted from the answering attempt's start)."""
    ALIASES: ClassVar[dict[str, str]] = {"chunk_t": "chunk_t_ns"}  # schema v1
    latency_s: float | None = _k("request sent → stream ended, s")
    first_token_s: float | None = _k("request sent → first answer token, s")
    first_thinking_s: float | None = _k("request sent → first thinking token, s")
    first_chunk_s: float | None = _k("request sent → first streamed chunk of any kind, s (vLLM's TTFT)")
    chunks: int | None = _k("streamed chunks received")
    chunk_t_ns: list[int] | None = _k("arrival time of every chunk on the shared clock, ns (ITL/TPOT under any definition)")
    retries: int | None = _k("attempts before the last one")
    degraded: dict[str, Any] | None = _k("{param: value} lowered after an out-of-memory answer")
    attempt_s: float | None = _k("request sent → the answering attempt sent, s (0 without retries)")
    elapsed_s: float | None = _k("schema v1 only: first attempt sent → last attempt ended, s")
    cold: bool | None = _k("the model was loaded for this request (from load_duration; absent when unknown)")
    bad_lines: int | None = _k("streamed lines that were not valid JSON")


@dataclass(kw_only=True, slots=True)
class ReqEnd(Body):
    """A request ended (`t` closes its window). In the recording it means the request is complete."""
    TOPIC: ClassVar[str] = REQ_END
    rid: str = _k("request id", required=True)
    ok: bool = _k("true when a complete answer arrived", required=True)
    error: str | None = _k("what went wrong (absent when ok)")
    error_kind: str | None = _k("`connection` | `not_found` | `busy` | `oom` | `midstream` | `truncated` | "
                                "`timeout` | `bad_response`")
    text: str | None = _k("the generated answer")
    thinking: str | None = _k("thinking text, where the model streams it")
    api: dict[str, Any] | None = _k("the server's own figures: eval_count, eval_duration_ns, prompt_eval_count, "
                                    "prompt_eval_duration_ns, load_duration_ns, total_duration_ns, done_reason; "
                                    "OpenAI-compatible: completion_tokens, prompt_tokens, cached_tokens, timings")
    client: ClientMetrics | None = _k("the collector's timings (see ClientMetrics)")
    params: dict[str, Any] | None = _k("parameters finally sent, when an out-of-memory retry changed them")
    warmup: bool | None = _k("true for a warm-up request")
    served_model: str | None = _k("the model name the server reported in its answer (compare with req.start "
                                  "`model`)")
    text_note: dict[str, Any] | None = _k("measuring proxy: the answer is not stored whole (as req.start "
                                          "`prompt_note`)")


@dataclass(kw_only=True, slots=True)
class ReqProgress(Body):
    """How far a streamed answer has come, sent by the collector and the measuring proxy at most every
    `PROGRESS_EVERY_NS` (0.5 s) per request while it streams, never per chunk. For live views only:
    the analysis of results ignores it (a recording with or without it gives the same results)."""
    TOPIC: ClassVar[str] = REQ_PROGRESS
    rid: str = _k("request id", required=True)
    attempt: int | None = _k("which attempt of the request (0 = first; retries count up and start again at 0 tokens)")
    chunks_so_far: int | None = _k("streamed chunks received in this attempt")
    tokens_so_far: int | None = _k("tokens generated so far as the client can know them (see `tokens_basis`)")
    tokens_basis: str | None = _k("`chunks`: streamed chunks that carried answer or thinking text (Ollama and "
                                  "OpenAI-compatible servers send about one token per chunk) | `server`: a count "
                                  "the server put in the stream")
    chars_so_far: int | None = _k("characters of answer and thinking text received in this attempt")


@dataclass(kw_only=True, slots=True)
class BatchStart(Body):
    """A batch (or its resumption) starts."""
    TOPIC: ClassVar[str] = BATCH_START
    batch: str = _k("batch id (the directory name)", required=True)
    config: dict[str, Any] | None = _k("the snapshot written to config.json, each setting with its source")
    cases: list[dict] | None = _k("the resolved cases: prompt, task, load, lang, reference_text, max_tokens, "
                                  "temperature, expect, ...")
    models: dict[str, dict] | None = _k("{model: {digest, parameter_size, quantization_level, family, "
                                        "context_length}}")
    backend: str | None = _k("`ollama` | `ollama-chat` | `openai` | `openai-completions`; `proxy` for the measuring proxy")
    base_url: str | None = _k("the LLM server's address")
    server_version: str | None = _k("the server's version, where it says")
    server: str | None = _k("what the start-up probe found: `ollama`, `llamacpp`, `vllm`, ... or `openai`")
    missing_models: list[str] | None = _k("requested models the server does not list (their requests are skipped)")
    planned: int | None = _k("requests in the matrix")
    resumed: bool | None = _k("true when this start resumes an earlier one")
    already_done: int | None = _k("requests finished before this start")
    load: dict[str, Any] | None = _k("how the batch loads the server: `levels` in run order ({kind, value, "
                                     "label}), `swept`, `arrival`, `arrival_seed`, `max_concurrency`, "
                                     "`server_parallel` (+ `_source`) where the server tells, `ignore_eos`")


@dataclass(kw_only=True, slots=True)
class BatchEnd(Body):
    """A batch (or one start of it) ends."""
    TOPIC: ClassVar[str] = BATCH_END
    batch: str = _k("batch id", required=True)
    requests: int | None = _k("requests run by this start")
    ok: int | None = _k("of them, complete answers")
    failed: int | None = _k("of them, failed")
    skipped: int | None = _k("requests not run (model missing, batch stopped)")
    interrupted: bool | None = _k("true when stopped early (Ctrl-C, server gone)")
    telemetry_received: int | None = _k("telemetry messages the collector recorded")
    late_starts: int | None = _k("open loop: requests that started more than 10 ms after their scheduled "
                                 "arrival or waited for a --max-concurrency slot (never delayed silently)")
    telemetry_dropped: dict[str, int] | None = _k("{oversize, invalid}: bus messages refused unread")


@dataclass(kw_only=True, slots=True)
class ClockSync(Body):
    """One clock probe of a telemetry source by the collector (NTP-style), recorded by the collector at
    batch start, every few seconds and at the end. Envelope `t` is the collector's clock at the answer.
    The analyzer fits each source's clock into the collector's (offset and drift) from these."""
    TOPIC: ClassVar[str] = CLOCK_SYNC
    source: str = _k("the probed telemetry publisher id (the `src` of its tel.* messages)", required=True)
    sent_ns: int = _k("collector clock (`shared.timebase.now_ns()`) when the probe left", required=True)
    received_ns: int = _k("collector clock (`shared.timebase.now_ns()`) when the answer arrived", required=True)
    remote_ns: int = _k("the source's clock (the one its tel.* `t` uses) when it answered, ns", required=True)
    rtt_ns: int | None = _k("received_ns − sent_ns, ns: the offset is known to ± rtt_ns / 2")
    offset_ns: int | None = _k("remote_ns − (sent_ns + received_ns) / 2: the source's clock minus the collector's, ns")
    remote_wall_ns: int | None = _k("the source's `time.time_ns()` when it answered")
    boot_id: str | None = _k("the source host's boot id (absent where the OS has none)")
    local_boot_id: str | None = _k("the collector host's boot id")
    same_host: bool | None = _k("true when both boot ids are known and equal: one clock, no mapping needed")
    phase: str | None = _k("`start` | `during` | `end` of the batch")
    endpoint: str | None = _k("the probe endpoint asked")


@dataclass(kw_only=True, slots=True)
class AnaRow(Body):
    """One request's analysed row, published by `python -m analyzer --live` (`--publish-endpoint`) as
    soon as the telemetry after the request's end has arrived (or a bounded wait ran out), and again
    with `final` true when the batch's analysis at batch.end replaces it (those rows are results.csv's)."""
    TOPIC: ClassVar[str] = ANA_ROW
    rid: str = _k("request id (as in req.start)", required=True)
    batch: str | None = _k("batch id (the batch directory's name) the request belongs to")
    row: dict[str, Any] = _k("that request's results.csv row: {column: value}, absent values as nil", required=True)
    energy_ready: bool = _k("true when the row holds the request's GPU energy (`gpu_energy_j`)", required=True)
    reason: str | None = _k("why the row has no GPU energy, e.g. `no telemetry connected`, "
                            "`timed out waiting for telemetry after the end`")
    final: bool | None = _k("true for the row of the batch's analysis at batch.end (equal to a replay's "
                            "results.csv); absent or false for the row computed when the request ended")


BODIES: dict[str, type[Body]] = {c.TOPIC: c for c in (TelGpu, TelHost, TelHb, ReqStart, ReqFirstToken, ReqEnd,
                                                       ReqProgress, BatchStart, BatchEnd, ClockSync, AnaRow)}
TOPICS = tuple(BODIES)


def validate(topic: str, payload: dict[str, Any], strict: bool = False,
             body: type[Body] | None = None) -> dict[str, Any]:
    """Check the envelope and the topic's keys; return the payload unchanged. Unknown topics pass
    with a valid envelope (a newer publisher may add topics). ``body``: the declaration to check
    against, by default the topic's in BODIES (a reader given a wider declaration passes its own)."""
    for key in ENVELOPE_KEYS:
        if key not in payload:
            raise MessageError(f"{topic}: missing envelope key {key!r} (every payload needs {ENVELOPE_KEYS})")
    if payload["v"] not in READABLE_VERSIONS:
        raise MessageError(f"{topic}: schema version {payload['v']!r}, this build reads {READABLE_VERSIONS}")
    if not isinstance(payload["src"], str):
        raise MessageError(f"{topic}: 'src' must be a str, got {type(payload['src']).__name__} {payload['src']!r:.60}")
    for key in ENVELOPE_INTS:
        if not is_int64(payload[key]):
            raise MessageError(f"{topic}: {key!r} must be a 64-bit integer, got {payload[key]!r:.60}")
    body = body or BODIES.get(topic)
    if body is not None:
        body.check(payload, strict=strict)
    return payload


def parse(topic: str, payload: dict[str, Any]) -> Body:
    """Validate a payload and return its typed body."""
    validate(topic, payload)
    return BODIES[topic].from_msg(payload)
