"""Runs one batch: settings -> models -> matrix -> streamed requests -> events + recording.

I/O lives here (HTTP via :mod:`collector.runner`, bus + file via :mod:`collector.recorder`);
decisions live in the pure modules (plan, settings, failures).
"""
from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import aiohttp
from tqdm import tqdm

from collector import failures as F
from collector.arrivals import Start, late_summary, offsets, run_open_loop
from collector.attempt import AttemptState
from collector.backends import Params, get
from collector.load import Level, level_seed
from collector.load import levels as load_levels
from collector.metadata import ServerUnusable, fetch_model_meta, get_json, list_models
from collector.model_policy import ModelPolicy
from collector.outcome import (EXIT_CONNECTION, EXIT_INTERRUPTED, EXIT_OK, EXIT_SETTINGS, EXIT_TELEMETRY, Tally,
                               closing_line, exit_code, resume_command)
from collector.plan import (Job, case_models, finished_keys, missing_models, plan_jobs, request_key,
                            warmup_rid)
from collector.probe import OLLAMA_V1_NOTE, UNKNOWN, ServerKind, backend_problem, classify, ollama_v1_chosen
from collector.recorder import Recorder, TelemetryTimeout
from collector.retry import RetryPolicy
from collector.runner import RequestResult, run_request
from collector.settings import case_hash
from shared.batch import BatchDir
from shared.bus import BusBindError, BusSecurityError, CurveKeys
from shared.logs import get_logger
from shared.messages import BATCH_START, BatchEnd, BatchStart, ReqEnd, ReqFirstToken, ReqStart
from shared.procs import stop_child
from shared.recording import RecordingReader
from shared.tasks import unknown_task_notes

log = get_logger("collector")

WARMUP_PROMPT_MAX_TOKENS = 16
DRY_RUN_LINES = 40


@dataclass
class BatchOptions:
    batch: BatchDir
    settings: dict[str, dict[str, Any]]     # key -> {"value", "source"}
    cases: list[dict[str, Any]]
    cli_models: bool                        # --models given explicitly
    base_url: str
    events_endpoint: str | None
    telemetry_endpoint: str | list[str] | None  # None = --no-telemetry; a list: several daemons (GPU hosts)
    telemetry_wait_s: float = 5.0
    resume: bool = False
    analyze: bool = True
    progress: bool = True
    analyzer_args: list[str] = field(default_factory=list)
    pub_curve: CurveKeys | None = None     # CURVE server keys for a non-loopback events endpoint
    sub_curve: CurveKeys | None = None     # CURVE client keys + the daemon's public key
    policy: RetryPolicy = field(default_factory=RetryPolicy)
    extra_config: dict[str, Any] = field(default_factory=dict)  # cases source, fallback reason, ...
    batch_id: str | None = None             # from config.json on resume; else the directory name
    dry_run: bool = False
    created_dir: bool = False               # an auto-named directory this start made
    server: ServerKind = field(default_factory=lambda: ServerKind(UNKNOWN))
    clock_probe_s: float | None = 5.0       # seconds between clock probes of each telemetry source (None: none)
    # runs once the events endpoint is bound, before anything is sent on it (--serve starts its page here)
    on_bound: Callable[[], None] | None = None

    def value(self, key: str) -> Any:
        return self.settings[key]["value"]


def config_snapshot(opts: BatchOptions, batch_id: str) -> dict[str, Any]:
    """What config.json holds: every setting with its source, the resolved cases and the batch id
    (what --resume continues with), plus where cases came from."""
    snap = {"batch": batch_id, "settings": opts.settings, "backend": opts.value("backend"), "base_url": opts.base_url,
            "events_endpoint": opts.events_endpoint, "telemetry_endpoint": opts.telemetry_endpoint,
            "retry_policy": vars(opts.policy).copy(), "cli_models": opts.cli_models}
    snap.update(opts.extra_config)
    snap["cases"] = opts.cases
    return snap


def write_texts(batch: BatchDir, rid: str, res: RequestResult) -> None:
    """texts/<rid>.txt (+ .thinking.txt). raw/<rid>.json is the analyzer's (one owner per file)."""
    batch.text_file(rid).write_text(res.text, encoding="utf-8")
    if res.thinking:
        batch.text_file(rid).with_suffix(".thinking.txt").write_text(res.thinking, encoding="utf-8")


def prompt_of(case: dict[str, Any], params: Params) -> str:
    """What is sent: a raw completion prompt where the request is raw (HumanEval on /api/generate)."""
    return case["raw_prompt"] if params.raw and case.get("raw_prompt") else case["prompt"]


async def _run_job(session: aiohttp.ClientSession, rec: Recorder, opts: BatchOptions, job: Job,
                   case: dict[str, Any], params: Params, sched: Start | None = None) -> RequestResult:
    if opts.server.is_llamacpp:  # llama.cpp caches prompts unless told not to; say it either way
        params.cache_prompt = opts.value("prompt_cache") == "on"
    if opts.value("ignore_eos") and _takes_ignore_eos(opts):
        params.options.setdefault("ignore_eos", True)  # llama.cpp and vLLM: generate exactly max_tokens
    lv = job.level if job.level is not None and job.level.swept else None
    start = rec.emit(ReqStart(rid=job.rid, model=job.model, task=job.task, load=job.load, run=job.run, case=job.case,
                              case_hash=case_hash(case), warmup=job.warmup, prompt=prompt_of(case, params),
                              params=params.as_dict(), sweep=lv.kind if lv else None, sweep_level=job.sweep_level,
                              start_lag_ms=round(sched.lag_ms, 3) if sched else None,
                              start_blocked=sched.blocked if sched else None), flush=True)

    def on_first(kind: str, t: int, attempt: int) -> None:
        rec.emit(ReqFirstToken(rid=job.rid, kind=kind, attempt=attempt), t=t)

    def on_progress(att: AttemptState, t: int, attempt: int) -> None:
        rec.emit(att.progress(job.rid, attempt), t=t)

    res = await run_request(session, opts.value("backend"), opts.base_url, job.model, prompt_of(case, params), params,
                            timeout_s=opts.value("timeout_s"), policy=opts.policy, on_first=on_first, on_progress=on_progress,
                            t0_ns=start["t"], log=log)
    end = ReqEnd(rid=job.rid, ok=res.ok, text=res.text, thinking=res.thinking or None, api=res.api,
                 client=res.client, error=res.error, error_kind=res.error_kind, served_model=res.served_model,
                 # what was finally sent, when degrading changed it
                 params=res.params if res.params != params.as_dict() else None, warmup=job.warmup or None)
    # texts first, then the flushed req.end: a req.end in the recording means the request is complete
    if not job.warmup:
        write_texts(opts.batch, job.rid, res)
    rec.emit(end, flush=True)
    c = res.client
    log.info("request_done" if res.ok else "request_failed", rid=job.rid, ok=res.ok, error_kind=res.error_kind,
             error=res.error, latency_s=round(c.latency_s or 0.0, 3), first_token_s=c.first_token_s,
             eval_count=res.api.get("eval_count"), retries=c.retries, warmup=job.warmup)
    return res


async def _resolve_models(session: aiohttp.ClientSession, opts: BatchOptions
                          ) -> tuple[list[list[str]], dict[str, Any], list[str]]:
    """(models per case, metadata of the models to run, wanted models the server does not list)."""
    backend = opts.value("backend")
    all_models, listing = await list_models(session, backend, opts.base_url, opts.value("timeout_s"))
    per_case = [case_models(c, opts.value("models"), opts.cli_models, all_models, backend) for c in opts.cases]
    wanted = list(dict.fromkeys(m for ms in per_case for m in ms))
    listed = get(backend).listed_names(listing)
    missing = missing_models(wanted, listed, backend) if listing is not None else []
    meta = {}
    for m in wanted:
        if m not in missing:
            meta[m] = await fetch_model_meta(session, backend, opts.base_url, m, listing, opts.value("timeout_s"))
    return per_case, meta, missing


def _previous_state(opts: BatchOptions) -> set:
    """Identities of the requests finished in the existing recording."""
    path = opts.batch.stream
    if not (path.exists() and path.stat().st_size > 0):
        return set()
    return finished_keys(RecordingReader(path), opts.value("backend"))


def _job_key(opts: BatchOptions, job: Job):
    return request_key(job.model, case_hash(opts.cases[job.case]), job.load, job.run, opts.value("backend"),
                       job.sweep_level)


def _has_started(stream: Path) -> bool:
    """Whether a recording holds a batch.start (a header and telemetry alone are not a batch)."""
    if not (stream.exists() and stream.stat().st_size > 0):
        return False
    return any(t == BATCH_START for t, _ in RecordingReader(stream))


def _undo_empty_start(opts: BatchOptions, wrote_config: bool) -> None:
    """A start that sent no request leaves nothing behind that would block running it again."""
    b = opts.batch
    if b.stream.exists() and not _has_started(b.stream):
        b.stream.unlink()
    if wrote_config and b.config_json.exists():
        b.config_json.unlink()
    for d in (b.raw, b.texts, b.summary, b.plots) + ((b.root,) if opts.created_dir else ()):
        try:
            d.rmdir()  # only when empty
        except OSError:
            pass


ALL_MODELS = "*"  # a dry run that cannot ask the server: "all" stays unresolved


def settings_lines(settings: dict[str, dict[str, Any]], cases_source: str | None) -> list[str]:
    """``key  value  (source)`` per setting, one line each; the task/load/lang filters of the
    built-in set are shown only when the built-in set runs."""
    out = []
    width = max(map(len, settings))
    for key, entry in settings.items():
        if key in ("tasks", "loads", "langs") and cases_source not in (None, "builtin"):
            continue  # a case file's cases carry their own task, load and language
        value = entry.get("value")
        shown = "(none)" if value is None else " ".join(map(str, value)) if isinstance(value, list) else str(value)
        source = entry.get("source", "?") + (f":{entry['line']}" if entry.get("line") else "")
        out.append(f"  {key:<{width}}  {shown}  ({source})")
    return out


def print_plan(opts: BatchOptions, jobs: list[Job], per_model_warmup: list[str], missing: list[str],
               check_note: str | None) -> None:
    """--dry-run: the plan first (or a count and the first lines), then models, cases, settings
    with their sources, and any fallback."""
    lines = [f"warm-up  {m}" for m in per_model_warmup] + [f"request  {j.rid}" for j in jobs]
    source = opts.extra_config.get("cases_source")
    print(f"plan: {len(jobs)} request(s), {len(per_model_warmup)} warm-up(s), {len(opts.cases)} case(s) "
          f"({len(lines)} line(s)):")
    for line in lines[:DRY_RUN_LINES]:
        print("  " + line)
    if len(lines) > DRY_RUN_LINES:
        print(f"  … and {len(lines) - DRY_RUN_LINES} more")
    if check_note:
        print(f"models: not checked ({check_note})")
        if any(j.model == ALL_MODELS for j in jobs):
            print(f"  {ALL_MODELS} = every local generating model the server lists (\"all\"), resolved when it answers")
    elif missing:
        print(f"MISSING on the server (would be skipped): {', '.join(missing)}")
    else:
        print("models: all found on the server")
    enc = (opts.extra_config.get("encodings") or {}).get(str(source))
    print(f"cases: {'built-in task set' if source in (None, 'builtin') else source}"
          + (f" (read as {enc})" if enc else ""))
    for note in unknown_task_notes(opts.cases):
        print(f"UNKNOWN TASK: {note}")
    if opts.extra_config.get("suites"):  # selection and protocol, as config.json records them
        print("suites: " + json.dumps(opts.extra_config["suites"], ensure_ascii=False, default=str))
    print(f"server: {opts.base_url} ({opts.value('backend')})")
    print("settings (source):")
    for line in settings_lines(opts.settings, source):
        print(line)
    for f, why in ((opts.extra_config.get("fallback") or {}).get("files") or {}).items():
        print(f"FALLBACK (--use-default-on-error): {f}: {why}")


async def _probe(session: aiohttp.ClientSession, opts: BatchOptions) -> tuple[ServerKind, str | None]:
    """(what the server is, why the backend cannot use it or None)."""
    t = opts.value("timeout_s")
    version = await get_json(session, "GET", opts.base_url + "/api/version", t)
    models = None if version else await get_json(session, "GET", opts.base_url + "/v1/models", t)
    server = classify(version, models)
    # --backend and a URL ending in /v1, both written by the user: Ollama's /v1 is what they mean
    v1_named = (opts.settings["backend"]["source"] != "default"
                and str(opts.value("base_url") or "").rstrip("/").endswith("/v1"))
    if ollama_v1_chosen(opts.value("backend"), server, v1_named):
        log.warning("ollama_openai_api", base_url=opts.base_url + "/v1", note=OLLAMA_V1_NOTE)
    return server, backend_problem(opts.value("backend"), server, opts.base_url, v1_named)


SERVER_FIND_S = 3.0  # how long the batch waits for the telemetry daemon to find the LLM server's process


async def _find_server_process(rec: Recorder, opts: BatchOptions) -> None:
    """Before the first request: wait (bounded) until a daemon watching the server's port has found its
    process, so server_cpu_s covers every window; else say which rows will lack it (never a zero)."""
    parts = urlsplit(opts.base_url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    searching = await asyncio.to_thread(rec.wait_server_found, port, SERVER_FIND_S)
    if searching:
        log.warning("server_process_not_found", port=port, telemetry=searching, waited_s=SERVER_FIND_S,
                    effect="server_cpu_s and cpu_energy_j_server stay empty for the requests before the daemon "
                           "finds the process listening on that port",
                    fix="is the daemon on the server's host, and may it see that process (same user, or root)?")


@dataclass
class Collected:
    """What the collecting part of a batch left: the exit code so far, and the tally to close with
    (None when the batch never started: nothing to analyse, no closing line)."""
    code: int
    tally: Tally | None = None
    rec_messages: int = 0


async def run_batch(opts: BatchOptions) -> int:
    """Run the whole batch; returns the process exit code (collector.outcome)."""
    return finish_batch(opts, await collect_batch(opts))


def finish_batch(opts: BatchOptions, c: Collected) -> int:
    """The closing analysis and the closing line (the resume line is always the last thing printed).
    The collector's CLI runs this after the event loop is gone, so a Ctrl-C here is a plain
    KeyboardInterrupt that run_analyzer catches: no traceback, the closing line still follows."""
    if c.tally is None:
        return c.code
    tally, batch = c.tally, opts.batch
    log.info("batch_end", batch=opts.batch_id or batch.root.name, dir=str(batch.root), planned=tally.planned,
             ok=tally.ok_total, failed=tally.failed, skipped=tally.skipped, interrupted=tally.interrupted,
             telemetry_messages=c.rec_messages)
    analysis = None
    if opts.analyze:
        # an interrupted batch is analysed too: what finished is usable now (marked partial)
        analysis = run_analyzer(batch.root, opts.analyzer_args)
    if analysis is INTERRUPTED:
        print(f"analysis interrupted: results.csv and the reports were not updated; run it again with "
              f"python -m analyzer --batch {batch.root}", file=sys.stderr, flush=True)
    print(closing_line(tally, batch.root, opts.extra_config.get("fallback")), file=sys.stderr, flush=True)
    return exit_code(tally)


async def collect_batch(opts: BatchOptions) -> Collected:
    """Run the batch's requests and write its recording (batch.start … batch.end)."""
    got = await _collect(opts)
    return got if isinstance(got, Collected) else Collected(got)


async def _collect(opts: BatchOptions) -> "Collected | int":
    batch = opts.batch
    batch_id = opts.batch_id or batch.root.name
    done_before: set = set()
    if opts.resume:
        done_before = _previous_state(opts)
    elif not opts.dry_run and _has_started(batch.stream):
        log.error("batch_has_recording", path=str(batch.stream),
                  fix=f"continue it: {resume_command(batch.root)}; or choose a new --exp-dir / --out")
        return EXIT_SETTINGS
    tally = Tally()
    started = wrote_config = False
    rec: Recorder | None = None
    try:
        if not opts.dry_run:
            for note in unknown_task_notes(opts.cases):
                log.warning("unknown_task", note=note)
            batch.make()
            snapshot = config_snapshot(opts, batch_id)
            if not (opts.resume and batch.config_json.exists()):  # a resume keeps the first start's file
                tmp = batch.config_json.with_suffix(".json.tmp")
                tmp.write_text(json.dumps(snapshot, ensure_ascii=False, indent=1, default=str), encoding="utf-8")
                tmp.replace(batch.config_json)
                wrote_config = not opts.resume
            try:
                rec = Recorder(batch.stream, opts.events_endpoint, opts.telemetry_endpoint, meta={"batch": batch_id},
                               pub_curve=opts.pub_curve, sub_curve=opts.sub_curve, clock_probe_s=opts.clock_probe_s)
            except BusBindError as exc:
                log.error("events_endpoint_unusable", error=str(exc),
                          fix="is another collector running? pass a free --events-endpoint tcp://127.0.0.1:PORT")
                return EXIT_SETTINGS
            except BusSecurityError as exc:
                log.error("events_endpoint_refused", error=str(exc),
                          fix="keep --events-endpoint on 127.0.0.1, or pass --curve-secret to encrypt it")
                return EXIT_SETTINGS
            if opts.on_bound is not None:
                await asyncio.to_thread(opts.on_bound)
            try:
                await asyncio.to_thread(rec.wait_heartbeat, opts.telemetry_wait_s)
            except TelemetryTimeout as exc:
                log.error("no_telemetry", error=str(exc))
                return EXIT_TELEMETRY
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10)
        # A fresh connection per request: no request pays for reviving a keep-alive connection the
        # server already closed (llama.cpp's server closes them), so every window times the same work.
        connector = aiohttp.TCPConnector(force_close=True, limit=0)
        async with aiohttp.ClientSession(timeout=timeout, read_bufsize=1 << 20, connector=connector) as session:
            try:
                opts.server, problem = await _probe(session, opts)
                if problem is not None:
                    log.error("wrong_server", base_url=opts.base_url, backend=opts.value("backend"), error=problem)
                    return EXIT_CONNECTION
                per_case, models_meta, missing = await _resolve_models(session, opts)
            except aiohttp.ClientConnectorError as exc:
                hint = F.connection_hint(opts.base_url, str(exc.os_error or exc))
                if opts.dry_run:
                    per_case = [case_models(c, opts.value("models"), opts.cli_models, [ALL_MODELS],
                                            opts.value("backend")) for c in opts.cases]
                    jobs = plan_jobs(batch_id, opts.cases, per_case, opts.value("runs"), load_levels(opts.settings))
                    print_plan(opts, jobs, [], [], f"server unreachable: {hint}")
                    return EXIT_OK
                log.error("server_unreachable", error=hint)
                return EXIT_CONNECTION
            except ServerUnusable as exc:
                log.error("server_unusable", base_url=opts.base_url, error=str(exc),
                          fix="is --base-url / OLLAMA_HOST the LLM server's HTTP address (not another service)?")
                return EXIT_CONNECTION
            if not any(per_case):
                log.error("no_models", base_url=opts.base_url,
                          fix="pull a model (`ollama pull gemma3:4b`) or name models with --models")
                return EXIT_SETTINGS
            levels = load_levels(opts.settings)
            jobs = plan_jobs(batch_id, opts.cases, per_case, opts.value("runs"), levels)
            if missing:
                log.error("models_missing", models=missing, base_url=opts.base_url,
                          fix=_missing_fix(opts.value("backend"), missing),
                          effect=f"their {sum(j.model in missing for j in jobs)} request(s) are skipped")
            warmups = [m for m in models_meta if opts.value("warmup")]
            if opts.dry_run:
                print_plan(opts, jobs, warmups, missing, None)
                return EXIT_OK
            await _find_server_process(rec, opts)
            todo = [j for j in jobs if _job_key(opts, j) not in done_before]
            tally.planned, tally.already_done = len(jobs), len(jobs) - len(todo)
            skipped = [j for j in todo if j.model in missing]
            tally.skipped += len(skipped)
            todo = [j for j in todo if j.model not in missing]
            rec.emit(BatchStart(batch=batch_id, config={k: v for k, v in snapshot.items() if k != "cases"},
                                cases=opts.cases, models=models_meta, backend=opts.value("backend"),
                                base_url=opts.base_url, server_version=opts.server.version,
                                server=opts.server.flavor or opts.server.kind, planned=len(jobs),
                                resumed=bool(opts.resume), already_done=tally.already_done,
                                missing_models=missing or None,
                                load=await _load_facts(session, opts, levels)), flush=True)
            started = True
            log.info("batch_start", batch=batch_id, planned=len(jobs), todo=len(todo), models=list(models_meta),
                     base_url=opts.base_url, backend=opts.value("backend"), server=opts.server.flavor)
            await _run_matrix(session, rec, opts, todo, models_meta, tally)
    except asyncio.CancelledError:
        tally.interrupted = True
        log.warning("batch_interrupted", batch=batch_id)
    finally:
        if rec is not None:
            if started:
                if not rec.settle(1.0):  # the last window gets samples after its end, as every other one
                    log.warning("telemetry_silent_at_end", note="the last request's window may be partly uncovered")
                rec.emit(BatchEnd(batch=batch_id, requests=tally.requests, ok=tally.ok, failed=tally.failed,
                                  skipped=tally.skipped, interrupted=tally.interrupted or tally.fatal is not None,
                                  telemetry_received=rec.telemetry_received, late_starts=tally.late_starts or None,
                                  telemetry_dropped={"oversize": rec.inbox.dropped_oversize,
                                                     "invalid": rec.inbox.dropped_invalid}), flush=True)
            rec.close()
        if not started and not opts.dry_run:
            _undo_empty_start(opts, wrote_config)
    if not started:
        return Collected(EXIT_INTERRUPTED if tally.interrupted else EXIT_OK)
    return Collected(exit_code(tally), tally, rec.telemetry_received if rec else 0)


def _missing_fix(backend: str, missing: list[str]) -> str:
    return get(backend).missing_fix(missing)


async def _run_matrix(session: aiohttp.ClientSession, rec: Recorder, opts: BatchOptions, todo: list[Job],
                      models_meta: dict[str, Any], tally: Tally) -> None:
    """Model by model (it stays loaded), level by level: each level drained before the next."""
    by_model: dict[str, dict[Level | None, list[Job]]] = {}
    for j in todo:
        by_model.setdefault(j.model, {}).setdefault(j.level, []).append(j)
    bar = tqdm(total=len(todo), desc="requests", unit="req", disable=not opts.progress or None, file=sys.stderr,
               dynamic_ncols=True)
    if opts.value("warmup") and get(opts.value("backend")).keeps_alive \
            and str(opts.value("keep_alive")) in ("0", "0s", "0m"):
        log.warning("warmup_with_keepalive_0", keep_alive=opts.value("keep_alive"),
                    note="the model unloads after every request, so each timed request is cold anyway; "
                         "use --keepalive 5m to measure warm requests")
    stop = asyncio.Event()
    first_level = True
    try:
        for model, per_level in by_model.items():
            policy = ModelPolicy(opts.settings)
            for level, jobs in per_level.items():
                if stop.is_set() or policy.skipped:
                    tally.skipped += len(jobs)
                    bar.update(len(jobs))
                    continue
                if level is not None and level.swept and not first_level and opts.value("cooldown_s"):
                    log.info("sweep_cooldown", seconds=opts.value("cooldown_s"), next_sweep_level=level.label)
                    await asyncio.sleep(opts.value("cooldown_s"))
                first_level = False
                if opts.value("warmup"):  # once per model and level: every level starts warm
                    await _warmup(session, rec, opts, jobs[0], policy, tally, stop)
                if stop.is_set() or policy.skipped:
                    tally.skipped += len(jobs)
                    bar.update(len(jobs))
                    continue
                await _run_level(session, rec, opts, model, level, jobs, policy, tally, stop, bar)
    finally:
        bar.close()
    if tally.fatal:
        log.error("batch_stopped", reason=tally.fatal, kept="every finished request is in the recording")


async def _warmup(session: aiohttp.ClientSession, rec: Recorder, opts: BatchOptions, first: Job,
                  policy: ModelPolicy, tally: Tally, stop: asyncio.Event) -> None:
    case = opts.cases[first.case]
    wjob = Job(warmup_rid(first.rid.split("/", 1)[0], first.model, first.level), first.model, first.case, first.task,
               first.load, 0, warmup=True, level=first.level)
    res = await _run_job(session, rec, opts, wjob, case, policy.warmup_params(case, WARMUP_PROMPT_MAX_TOKENS))
    policy.remember(res.client.degraded, res.error_kind, warmup=True)
    if res.fatal:
        tally.fatal = res.error
        stop.set()
    elif policy.after(res.error_kind):
        _log_skipped(first.model)


async def _run_level(session: aiohttp.ClientSession, rec: Recorder, opts: BatchOptions, model: str,
                     level: Level | None, jobs: list[Job], policy: ModelPolicy, tally: Tally, stop: asyncio.Event,
                     bar) -> None:
    """One level's requests: closed loop (N parallel streams) or open loop (arrivals on schedule)."""
    level = level or Level("concurrency", opts.value("concurrency"))

    async def one(job: Job, sched: Start | None = None) -> None:
        if stop.is_set() or policy.skipped:
            tally.skipped += 1
            bar.update(1)
            return
        case = opts.cases[job.case]
        res = await _run_job(session, rec, opts, job, case, policy.params(case, job.run), sched)
        policy.remember(res.client.degraded, res.error_kind)
        tally.requests += 1
        if res.ok:
            tally.ok += 1
        else:
            tally.failed += 1
        if res.fatal:
            tally.fatal = res.error
            stop.set()
        elif policy.after(res.error_kind):
            _log_skipped(model)
        bar.update(1)

    if level.swept:
        log.info("sweep_level_start", model=model, sweep_level=level.label, requests=len(jobs))
    if not level.open_loop:
        sem = asyncio.Semaphore(int(level.value))

        async def bounded(job: Job) -> None:
            async with sem:
                await one(job)

        await asyncio.gather(*(bounded(j) for j in jobs))
        return
    schedule = offsets(level.arrival, len(jobs), float(level.value), level_seed(opts.value("arrival_seed"), model,
                                                                                   level))
    records = await run_open_loop(schedule, level.max_concurrency, lambda i, r: one(jobs[i], r), stop)
    tally.skipped += len(jobs) - len(records)
    bar.update(len(jobs) - len(records))
    late = late_summary(records)
    tally.late_starts += late["late"]
    if late["late"]:
        log.warning("late_starts", model=model, sweep_level=level.label, **late,
                    note="these requests started after their scheduled arrival (the server or --max-concurrency "
                         "could not keep up); each one's start_lag_ms is recorded, nothing was delayed silently")
    else:
        log.info("level_schedule_kept", model=model, sweep_level=level.label, **late)


def _takes_ignore_eos(opts: BatchOptions) -> bool:
    """OpenAI-compatible servers (llama.cpp, vLLM) take ``ignore_eos``; Ollama's API has no such option."""
    return not opts.value("backend").startswith("ollama")


async def _load_facts(session: aiohttp.ClientSession, opts: BatchOptions, levels: list[Level]) -> dict[str, Any]:
    """What shapes the load levels, for batch.start: the levels, the arrival process, and how many
    requests the server serves in parallel where it tells (llama.cpp's /props total_slots; Ollama's
    OLLAMA_NUM_PARALLEL when set in this environment). Warns when a level asks for more."""
    facts: dict[str, Any] = {
        "levels": [{"kind": lv.kind, "value": lv.value, "label": lv.label} for lv in levels],
        "swept": any(lv.swept for lv in levels), "arrival": opts.value("arrival"),
        "arrival_seed": opts.value("arrival_seed"), "max_concurrency": opts.value("max_concurrency"),
        "server_parallel": None, "server_parallel_source": None}
    if opts.value("ignore_eos"):
        facts["ignore_eos"] = ("sent (ignore_eos: true)" if _takes_ignore_eos(opts) else
                               "not supported by Ollama's API: output lengths vary with the model's answers")
        if not _takes_ignore_eos(opts):
            log.warning("ignore_eos_unsupported", backend=opts.value("backend"),
                        note="Ollama has no ignore_eos; outputs end where the model stops (or at --max-tokens)")
    if opts.server.is_llamacpp:
        props = await get_json(session, "GET", opts.base_url + "/props", opts.value("timeout_s"))
        slots = (props or {}).get("total_slots") if isinstance(props, dict) else None
        if isinstance(slots, int):
            facts.update(server_parallel=slots, server_parallel_source="llama.cpp /props total_slots")
    elif opts.value("backend").startswith("ollama"):
        env = os.environ.get("OLLAMA_NUM_PARALLEL", "").strip()
        if env.isdigit():
            facts.update(server_parallel=int(env), server_parallel_source="OLLAMA_NUM_PARALLEL (this environment)")
    want = max((lv.value if not lv.open_loop else (lv.max_concurrency or 0) for lv in levels), default=1)
    par = facts["server_parallel"]
    if par is not None and want > par:
        log.warning("concurrency_above_server_parallel", requested=want, server_parallel=par,
                    source=facts["server_parallel_source"],
                    note="the server queues requests beyond its parallel slots: TTFT then includes queueing")
    elif par is None and want > 1 and opts.value("backend").startswith("ollama"):
        log.warning("server_parallel_unknown", requested=want,
                    note="Ollama serves at most OLLAMA_NUM_PARALLEL requests at once (set on the server) and queues "
                         "the rest; the analyzer flags levels whose TTFT grows like a queue")
    return facts


def _log_skipped(model: str) -> None:
    log.warning("model_skipped", model=model, reason="not found on the server (404)",
                fix=f"`ollama pull {model}` or fix the name")


def analyzer_command(batch_root: Path, extra: list[str] | None = None) -> list[str]:
    return [sys.executable, "-m", "analyzer", "--batch", str(batch_root), *(extra or [])]


class _Interrupted:
    """run_analyzer's answer when Ctrl-C stopped the analysis (falsy, like a failure)."""

    def __bool__(self) -> bool:
        return False


INTERRUPTED = _Interrupted()
ANALYZER_STOP_S = 10.0  # after a Ctrl-C: how long the analyzer child may take to stop before it is killed


def run_analyzer(batch_root: Path, extra: list[str] | None = None) -> bool:
    """Run the analyzer as a separate process; a failure is a warning (collection is complete).

    The child shares the terminal's process group, so a Ctrl-C reaches it too and it stops by itself
    (one line, exit 130, no traceback); here the KeyboardInterrupt only waits for that, kills the child
    if it lingers (or at a further Ctrl-C), and returns :data:`INTERRUPTED`."""
    cmd = analyzer_command(batch_root, extra)
    shown = " ".join(["python -m analyzer --batch", str(batch_root), *(extra or [])])
    log.info("analyzer_start", command=shown)
    try:
        proc = subprocess.Popen(cmd)
    except OSError as exc:
        log.warning("analyzer_failed", error=str(exc), run_later=shown)
        return False
    try:
        proc.wait()
    except KeyboardInterrupt:
        # a terminal's Ctrl-C reached the child too; a SIGTERM to the collector alone did not: then the
        # analysis may still finish within the wait, else the child is killed
        if stop_child(proc, ANALYZER_STOP_S, own_group=False, asked=True) == 0:
            return True
        log.warning("analysis_interrupted", run_later=shown)
        return INTERRUPTED
    if proc.returncode == EXIT_INTERRUPTED:  # the child got the Ctrl-C, this process did not
        log.warning("analysis_interrupted", run_later=shown)
        return INTERRUPTED
    if proc.returncode != 0:
        log.warning("analyzer_failed", returncode=proc.returncode, run_later=shown,
                    note="collection is complete; the recording is intact")
        return False
    return True
