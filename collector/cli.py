"""``python -m collector``: run a batch of streamed requests against a local LLM server.

    python -m collector --exp-dir data/experiments_2 [--cases-file F] [--exp-config F]
                        [--use-default-on-error] [--dry-run] [--resume]
    python -m collector --models deepseek-r1:8b gemma3:4b --tasks qa summary code creative \\
                        --loads short medium long --runs 3 --out data --max_tokens 256 \\
                        --temperature 0.7 --seed 1234 --warmup --keepalive 0s

With --exp-dir, EXP_DIR/test_cases.json and EXP_DIR/config.py are read when present.
Without it, a new data/experiments_{index}_{start_time}/ is created under --out.
Flags with underscores also accept dashes (--max_tokens = --max-tokens).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from collector.backends import BACKENDS, REGISTRY, normalize_base_url
from collector.handwritten import SAVE_AS_UTF8
from collector.batch_run import BatchOptions, Collected, collect_batch, finish_batch
from collector.load import conflicts as load_conflicts
from collector.load import overridden as load_overridden
from collector.load import sweep_defaults
from collector.outcome import EXIT_CODES_HELP, EXIT_INTERRUPTED, EXIT_SETTINGS
from collector.resume import resume_inputs
from collector.retry import RetryPolicy
from collector.settings import SettingsError, load_test_cases, read_config_py, resolve_settings
from collector.suites import SuiteError, build_cases, parse_spec, parse_stop, protocol_record
from collector.tasks import LANGS, LOADS, TASKS, builtin_cases
from shared.batch import BatchDir, new_batch_dir
from shared.bus import BusSecurityError, CurveKeys, events_endpoint, is_loopback, telemetry_endpoint
from shared.cli import add_curve_args, add_log_args, curve_keys
from shared.listen import ALLOW_REMOTE_FLAG, ListenError, check_listen, parse_listen
from shared.logs import configure_logging, get_logger

log = get_logger("collector.cli")


def add_bus_args(b) -> None:
    """The bus and telemetry flags, the same on the collector and the measuring proxy."""
    b.add_argument("--events-endpoint", "--events_endpoint", dest="events_endpoint", default=None,
                   help="PUB endpoint for req.*/batch.* events (default: GENAI_EVENTS_ENDPOINT or tcp://127.0.0.1:5557)")
    b.add_argument("--telemetry-endpoint", "--telemetry_endpoint", dest="telemetry_endpoint", default=None,
                   action="append", help="telemetry daemon PUB endpoint; repeat it for several daemons (GPU hosts) "
                   "(default: GENAI_TELEMETRY_ENDPOINT or tcp://127.0.0.1:5556)")
    b.add_argument("--telemetry-server-key", dest="telemetry_server_key", type=Path, action="append", default=None,
                   metavar="FILE", help="with several --telemetry-endpoint on CURVE: each daemon's public .key, in "
                   "the same order (default: --curve-server-key for all)")
    b.add_argument("--clock-probe-s", dest="clock_probe_s", type=float, default=5.0,
                   help="seconds between clock probes of each telemetry source during the batch (default 5; "
                        "0 = none: only for daemons on this host)")
    b.add_argument("--no-telemetry", "--no_telemetry", dest="no_telemetry", action="store_true",
                   help="do not wait for or record telemetry (no energy figures)")
    b.add_argument("--telemetry-wait", "--telemetry_wait", dest="telemetry_wait", type=float, default=5.0,
                   help="seconds to wait for the first telemetry heartbeat (default 5)")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m collector", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="exit codes:\n" + EXIT_CODES_HELP + "\n\nwatch requests live: "
                                        "python -m telemetry.tail --requests")
    g = ap.add_argument_group("batch and files")
    g.add_argument("--exp-dir", "--exp_dir", dest="exp_dir", type=Path,
                   help="batch directory; its test_cases.json and config.py are read when present")
    g.add_argument("--out", type=Path, default=None,
                   help="parent directory for a new experiments_{index}_{time} batch (default: data)")
    g.add_argument("--cases-file", "--cases_file", dest="cases_file", type=Path,
                   help="test_cases.json to use (default: EXP_DIR/test_cases.json if present, else the built-in set)")
    g.add_argument("--exp-config", "--exp_config", dest="exp_config", type=Path,
                   help="config.py with NAME = literal overrides (default: EXP_DIR/config.py if present)")
    g.add_argument("--use-default-on-error", "--use_default_on_error", dest="use_default_on_error",
                   action="store_true", help="if a file is bad, log why and run the built-in task set instead")
    g.add_argument("--dry-run", "--dry_run", dest="dry_run", action="store_true",
                   help="validate files and print the resolved settings and request matrix; send nothing")
    g.add_argument("--resume", action="store_true",
                   help="continue the --exp-dir batch with the settings and cases saved at its first start "
                        "(config.json): requests whose successful req.end is in the recording are skipped")
    m = ap.add_argument_group("matrix")
    m.add_argument("--models", nargs="+", help='model names, or "all" (every local generating model on the server)')
    m.add_argument("--tasks", nargs="+", choices=TASKS, help="built-in tasks to run (default: all four)")
    m.add_argument("--loads", nargs="+", choices=LOADS, help="prompt loads (default: short medium long)")
    m.add_argument("--langs", nargs="+", choices=LANGS, help="built-in prompt languages (default: en zh)")
    m.add_argument("--runs", type=int, help="repetitions of every request (default 1)")
    q = ap.add_argument_group("benchmark suites (docs/collector.md#suites)")
    q.add_argument("--suite", action="append", default=None, metavar="SUITE",
                   help="humaneval | gsm8k=FILE.jsonl | choice=FILE (.jsonl/.csv) | reference=FILE.jsonl; repeatable. "
                        "Instead of the built-in tasks, or beside them when --tasks is given")
    q.add_argument("--limit", type=int, help="the first N items of each suite, in file order")
    q.add_argument("--sample", type=int, help="a stable random N items of each suite (see --sample-seed)")
    q.add_argument("--sample-seed", "--sample_seed", dest="sample_seed", type=int, default=0,
                   help="seed of --sample (default 0)")
    q.add_argument("--shots", type=int, default=0, help="few-shot: the first N items of --shots-file before each "
                                                         "question (default 0: zero-shot)")
    q.add_argument("--shots-file", "--shots_file", dest="shots_file", type=Path,
                   help="the few-shot examples, in the suite's own format")
    q.add_argument("--stop", action="append", default=None, metavar="SEQ",
                   help="a stop sequence sent instead of the suites' own (repeatable; write a newline as \\n). "
                        "Default: each suite's (docs/collector.md#suites)")
    q.add_argument("--no-stop", "--no_stop", dest="no_stop", action="store_true",
                   help="send no stop sequences with suite items (answers end at end-of-sequence or --max-tokens)")
    p = ap.add_argument_group("generation parameters")
    p.add_argument("--max-tokens", "--max_tokens", dest="max_tokens", type=int, help="max new tokens (default 256)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default 0.7)")
    p.add_argument("--top-p", "--top_p", dest="top_p", type=float, help="nucleus sampling top_p (server default)")
    p.add_argument("--num-ctx", "--num_ctx", dest="num_ctx", type=int, help="context length (Ollama only)")
    p.add_argument("--seed", type=int, help="sampling seed, passed through for reproducibility")
    p.add_argument("--keepalive", "--keep-alive", "--keep_alive", dest="keep_alive",
                   help='Ollama keep_alive (default "0s": unload after each request, as in the seed)')
    p.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                   help="one uncounted warm-up request per model (default off)")
    p.add_argument("--think", choices=("on", "off", "auto"),
                   help="ask thinking models to think (on/off); auto sends nothing (default)")
    s = ap.add_argument_group("server")
    s.add_argument("--backend", choices=BACKENDS,
                   help=", ".join(f"{b.name} ({b.path})" for b in REGISTRY.values()) + "; default ollama")
    s.add_argument("--base-url", "--base_url", dest="base_url",
                   help="server URL; host:port works too (default: OLLAMA_HOST, else http://127.0.0.1:11434; "
                        "openai: http://127.0.0.1:8080)")
    s.add_argument("--timeout", dest="timeout_s", type=float, help="seconds one request attempt may take before it is failed (default 600)")
    s.add_argument("--concurrency", type=int, help="closed loop: parallel streams per model (default 1); several "
                                                   "levels in one batch: --sweep concurrency=1,2,4")
    ld = ap.add_argument_group("load (open loop, sweeps, SLOs; docs/collector.md \"Load sweeps\")")
    ld.add_argument("--request-rate", "--request_rate", dest="request_rate", type=float,
                    help="open loop: start requests at this mean rate (requests/s) whether or not earlier ones "
                         "finished (default: none, the closed loop of --concurrency)")
    ld.add_argument("--arrival", choices=("poisson", "constant"),
                    help="open-loop arrival process (default poisson: exponential gaps)")
    ld.add_argument("--arrival-seed", "--arrival_seed", dest="arrival_seed", type=int,
                    help="seed of the Poisson schedule and of --sweep-order random (default 0)")
    ld.add_argument("--max-concurrency", "--max_concurrency", dest="max_concurrency", type=int,
                    help="open loop: at most this many requests in flight; a start that must wait is counted late")
    ld.add_argument("--sweep", metavar="KIND=L1,L2,...",
                    help="run the request matrix once per level: concurrency=1,2,4,8 (parallel streams) or "
                         "rate=0.5,1,2,4 (open-loop requests/s); one batch directory, rows carry sweep_level")
    ld.add_argument("--sweep-order", "--sweep_order", dest="sweep_order", choices=("given", "random"),
                    help="level order (default given; random is shuffled by --arrival-seed)")
    ld.add_argument("--cooldown-s", "--cooldown_s", dest="cooldown_s", type=float,
                    help="seconds of idle between sweep levels (default 0)")
    ld.add_argument("--goodput", nargs="+", metavar="KEY:MS",
                    help="SLOs in ms, vLLM's keys: ttft:500 tpot:50 e2el:10000; the analyzer reports goodput_share, "
                         "goodput_rps and J per good request per level")
    ld.add_argument("--ignore-eos", "--ignore_eos", dest="ignore_eos", action="store_true", default=None,
                    help="generate exactly --max-tokens (llama.cpp, vLLM); Ollama has no such option (said in the log)")
    s.add_argument("--prompt-cache", "--prompt_cache", dest="prompt_cache", choices=("off", "on"),
                   help="let llama.cpp's server reuse the KV cache of an earlier identical prompt (default off: "
                        "repeated runs each pay their own prefill; cached prompt tokens are recorded either way)")
    s.add_argument("--cpu-tdp-w", "--cpu_tdp_w", dest="cpu_tdp_w", type=float,
                   help="this host's CPU TDP in W, recorded for the analyzer's cpu_energy_j_approx (default: config.py "
                        "CPU_TDP_W, else env CPU_TDP_W, else the analyzer's 65)")
    s.add_argument("--retries", type=int, default=4, help="503 busy retries with doubling back-off (default 4)")
    s.add_argument("--backoff", type=float, default=0.5, help="first busy back-off in seconds (default 0.5)")
    b = ap.add_argument_group("bus and recording")
    add_bus_args(b)
    b.add_argument("--no-analyze", "--no_analyze", dest="no_analyze", action="store_true",
                   help="do not run `python -m analyzer --batch DIR` at the end")
    b.add_argument("--analyzer-args", "--analyzer_args", dest="analyzer_args", default="",
                   help='extra arguments for the analyzer run at the end, e.g. "--no-quality --no-plots"')
    add_curve_args(b, underscore=True)
    o = ap.add_argument_group("output")
    o.add_argument("--no-progress", "--no_progress", dest="no_progress", action="store_true", help="no progress bar")
    o.add_argument("--serve", default=None, metavar="HOST:PORT",
                   help="serve a live page of the batch (power, requests in flight, each answer's energy) here, e.g. "
                        "127.0.0.1:8765, from a child `python -m analyzer --live --serve`; loopback only unless "
                        "--allow-remote (the page has no authentication of its own)")
    o.add_argument(ALLOW_REMOTE_FLAG, action="store_true",
                   help="allow a non-loopback --serve address (no authentication: a warning is printed)")
    add_log_args(o, underscore=True)
    return ap


def _cli_settings(args: argparse.Namespace) -> dict[str, Any]:
    keys = ("models", "tasks", "loads", "langs", "runs", "max_tokens", "temperature", "top_p", "num_ctx", "seed",
            "keep_alive", "warmup", "think", "backend", "base_url", "timeout_s", "concurrency", "prompt_cache",
            "request_rate", "arrival", "arrival_seed", "max_concurrency", "sweep", "sweep_order", "cooldown_s",
            "goodput", "ignore_eos", "cpu_tdp_w")
    return {k: getattr(args, k) for k in keys}


def load_inputs(args: argparse.Namespace) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    """(settings with sources, cases, extra config facts). Raises SettingsError for a bad file unless
    --use-default-on-error, which replaces only the file that is bad (config.py by the defaults, a
    case file by the built-in set) and keeps the good one."""
    exp_dir: Path | None = args.exp_dir
    cases_file = args.cases_file or (exp_dir / "test_cases.json" if exp_dir and (exp_dir / "test_cases.json").is_file()
                                     else None)
    config_file = args.exp_config or (exp_dir / "config.py" if exp_dir and (exp_dir / "config.py").is_file() else None)
    extra: dict[str, Any] = {}
    fallback: dict[str, str] = {}

    def bad_file(path: Path, exc: SettingsError, instead: str) -> None:
        if not args.use_default_on_error:
            raise exc
        log.warning("bad_file_replaced", file=str(path), reason=str(exc), instead=instead, flag="--use-default-on-error")
        fallback[str(path)] = f"{exc} -> {instead}"

    encodings: dict[str, str] = {}

    def note_encoding(path: Path, info: dict) -> None:
        if info.get("encoding") not in (None, "utf-8"):
            encodings[str(path)] = info["encoding"]
            log.warning("file_not_utf8", file=str(path), read_as=info["encoding"],
                        note='read as GBK ("ANSI" from Notepad on a Chinese system)' if info["encoding"] == "gbk"
                        else "read as UTF-16 (Notepad's \"Unicode\")",
                        check=info.get("sample"), fix="if that line reads right, nothing is wrong; "
                        + SAVE_AS_UTF8 + " to make the file portable")

    config_py = None
    if config_file is not None:
        try:
            config_py = read_config_py(config_file, warn=log.warning, info=(info := {}))
            note_encoding(config_file, info)
            extra["config_py"] = str(config_file)
        except SettingsError as exc:
            bad_file(config_file, exc, "defaults for its settings")
    settings = resolve_settings(_cli_settings(args), config_py)
    problems = load_conflicts(settings)
    if problems:
        raise SettingsError("; ".join(problems))
    for note in load_overridden(settings):
        log.warning("sweep_overrides", setting=note)
    changed = sweep_defaults(settings)
    if changed:
        log.info("sweep_defaults", set=changed, note="a sweep measures serving, not loading; set --keepalive or "
                                                     "--no-warmup to choose otherwise")
    cases = None
    if cases_file is not None:
        try:
            cases = load_test_cases(cases_file, warn=log.warning, info=(info := {}))
            note_encoding(cases_file, info)
            extra["cases_source"] = str(cases_file)
        except SettingsError as exc:
            bad_file(cases_file, exc, "the built-in task set")
    suite_cases: list[dict[str, Any]] = []
    if args.suite:
        try:
            suite_cases, extra["suites"] = build_cases([parse_spec(x) for x in args.suite], args.limit, args.sample,
                                                       args.sample_seed, args.shots, args.shots_file,
                                                       parse_stop(args.stop, args.no_stop))
        except SuiteError as exc:
            raise SettingsError(str(exc)) from exc
    if cases is None and (not suite_cases or args.tasks):
        cases = builtin_cases(settings["tasks"]["value"], settings["loads"]["value"], settings["langs"]["value"])
        extra["cases_source"] = "builtin"
    if suite_cases:
        cases = (cases or []) + suite_cases
        extra["cases_source"] = "+".join(x for x in (extra.get("cases_source"), "suites") if x)
    record = protocol_record(cases, extra.get("suites"), settings["backend"]["value"])
    if record:
        extra["suites"] = record
    if fallback:
        extra["fallback"] = {"flag": "--use-default-on-error", "files": fallback}
    if encodings:
        extra["encodings"] = encodings
    return settings, cases, extra


def settings_fix(exc: SettingsError, args: argparse.Namespace) -> str:
    """The fix line of a settings error: --use-default-on-error only where it would help (a bad file on
    a fresh start; a resume reads the batch's saved config.json, not the files)."""
    if exc.file is None:
        return "fix the flag or value named above" if not args.resume else \
            "resume with the batch's own settings (drop the flags named above), or start a new batch"
    if args.resume:
        return f"fix {exc.file}; the resume reads the batch's saved config.json, not a replacement file"
    if args.use_default_on_error:
        return f"fix {exc.file}"
    return (f"fix {exc.file}, or pass --use-default-on-error to run with "
            + ("the built-in task set" if exc.file.suffix == ".json" else "the defaults") + " instead")


def _cases_from(args: argparse.Namespace) -> str:
    """What chose this command line's cases, for a resume that must not change them ("" = default)."""
    if args.cases_file:
        return f"--cases-file {args.cases_file}"
    if args.exp_dir and (args.exp_dir / "test_cases.json").is_file():
        return str(args.exp_dir / "test_cases.json")
    flags = [f"--{k} {' '.join(getattr(args, k))}" for k in ("tasks", "loads", "langs", "suite") if getattr(args, k)]
    return " ".join(flags)


def _resume(args: argparse.Namespace, settings, cases, extra) -> tuple[dict, list, dict, str | None]:
    """The batch's own saved settings, cases and id (config.json), checked against this command line."""
    saved_path = args.exp_dir / "config.json"
    if not saved_path.is_file():
        log.warning("resume_without_config", path=str(saved_path),
                    note="no saved settings: resuming with this command line's settings")
        return settings, cases, extra, None
    try:
        saved = json.loads(saved_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SettingsError(f"{saved_path}: cannot read the batch's saved settings ({exc}); restore it, or start "
                            "a new batch") from exc
    settings, cases = resume_inputs(saved, settings, cases, _cases_from(args), str(saved_path))
    extra = {k: saved[k] for k in ("cases_source", "config_py", "fallback", "cli_models", "encodings") if k in saved}
    return settings, cases, extra, saved.get("batch")


def bus_setup(args: argparse.Namespace) -> tuple[str, list[str], CurveKeys | None,
                                                  CurveKeys | list[CurveKeys] | None]:
    """(events endpoint, telemetry endpoints, PUB keys, SUB keys) from the flags of
    :func:`add_bus_args`; raises BusSecurityError for keys that do not fit."""
    keys = curve_keys(args)
    pub_curve = sub_curve = None
    if keys is not None:
        # encrypt our own PUB only off loopback, where bind_pub demands it
        pub_curve = None if is_loopback(args.events_endpoint or events_endpoint()) else keys
        sub_curve = keys if keys.server_public else None
    tel_endpoints = args.telemetry_endpoint or [telemetry_endpoint()]
    if args.telemetry_server_key:
        if keys is None or len(args.telemetry_server_key) != len(tel_endpoints):
            raise BusSecurityError(f"{len(args.telemetry_server_key)} --telemetry-server-key for "
                                   f"{len(tel_endpoints)} --telemetry-endpoint")
        sub_curve = [CurveKeys.from_secret_file(args.curve_secret, f) for f in args.telemetry_server_key]
    return args.events_endpoint or events_endpoint(), tel_endpoints, pub_curve, sub_curve


def recorder_telemetry(no_telemetry: bool, tel_endpoints: list[str]) -> str | list[str] | None:
    """What the Recorder takes: None for --no-telemetry, one endpoint, or several (GPU hosts)."""
    return None if no_telemetry else (tel_endpoints[0] if len(tel_endpoints) == 1 else tel_endpoints)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, json=args.log_json)
    if args.exp_dir is not None and not args.exp_dir.is_dir():
        log.error("exp_dir_missing", exp_dir=str(args.exp_dir),
                  fix="check the path; to start a batch there, create the directory first (with its test_cases.json "
                      "/ config.py if any); for a new auto-named batch use --out PARENT")
        return EXIT_SETTINGS
    if args.resume and args.exp_dir is None:
        log.error("resume_needs_exp_dir", fix="pass --exp-dir DIR: the batch directory to continue")
        return EXIT_SETTINGS
    batch_id = None
    try:
        settings, cases, extra = load_inputs(args)
        if args.resume:
            settings, cases, extra, batch_id = _resume(args, settings, cases, extra)
    except SettingsError as exc:
        fix = settings_fix(exc, args)
        log.error("bad_settings", error=str(exc).splitlines()[0], fix=fix)
        if "\n" in str(exc):  # every problem of the file, one per line, readable as written
            print(str(exc), file=sys.stderr, flush=True)
        return EXIT_SETTINGS
    backend = settings["backend"]["value"]
    base_url = normalize_base_url(settings["base_url"]["value"], backend)
    if args.exp_dir is not None:
        batch = BatchDir(args.exp_dir)
    else:
        batch = new_batch_dir(args.out or Path("data"))
    try:
        events_ep, tel_endpoints, pub_curve, sub_curve = bus_setup(args)
    except BusSecurityError as exc:
        log.error("bad_curve_keys", error=str(exc), fix="give one daemon .key per --telemetry-endpoint, in order, "
                  "with --curve-secret")
        return EXIT_SETTINGS
    opts = BatchOptions(
        batch=batch, settings=settings, cases=cases,
        cli_models=bool(extra.pop("cli_models", args.models is not None)), base_url=base_url,
        events_endpoint=events_ep, telemetry_endpoint=recorder_telemetry(args.no_telemetry, tel_endpoints),
        clock_probe_s=args.clock_probe_s or None,
        telemetry_wait_s=args.telemetry_wait, resume=args.resume, analyze=not args.no_analyze,
        progress=not args.no_progress, analyzer_args=child_log_args(args) + shlex.split(args.analyzer_args), pub_curve=pub_curve,
        sub_curve=sub_curve, policy=RetryPolicy(busy_retries=args.retries, backoff_s=args.backoff),
        extra_config=extra, batch_id=batch_id, dry_run=args.dry_run, created_dir=args.exp_dir is None)
    page = None
    if args.serve is not None and not args.dry_run:
        page = _live_page(args, tel_endpoints, opts.events_endpoint)
        if page is None:
            return EXIT_SETTINGS
        opts.on_bound = lambda: _start_page(page)
    try:  # the page stays up through the closing analysis, then goes with the collector
        try:
            collected = asyncio.run(_main_with_signals(opts))
        except KeyboardInterrupt:
            return EXIT_INTERRUPTED
        # outside the event loop: a Ctrl-C during the closing analysis is a plain KeyboardInterrupt there,
        # and SIGTERM (Ctrl-Break on Windows, what the demo sends) is made one too
        _stop_signal_as_ctrl_c()
        return finish_batch(opts, collected)
    finally:
        if page is not None:
            page.stop()


def _live_page(args: argparse.Namespace, tel_endpoints: list[str], events_ep: str):
    """The child that will serve the live page (collector.live_child); None after logging why it cannot."""
    from collector.live_child import LivePage, live_command

    try:
        listen = parse_listen(args.serve, "--serve")
        warning = check_listen(listen, args.allow_remote, "--serve")
    except ListenError as exc:
        log.error("bad_serve", error=str(exc))
        return None
    if warning:
        print(f"warning: {warning}", file=sys.stderr, flush=True)
    return LivePage(live_command(str(listen), [] if args.no_telemetry else tel_endpoints, events_ep,
                                 allow_remote=args.allow_remote, curve_secret=args.curve_secret,
                                 curve_server_key=args.curve_server_key))


def _start_page(page) -> None:
    """Start the page's process once the events endpoint is bound (it then hears batch.start); a page
    that cannot start is logged and the batch goes on without it."""
    from collector.live_child import LivePageError

    try:
        url = page.start()
    except LivePageError as exc:
        log.error("live_page_failed", error=str(exc))
        return
    log.info("live_page", url=url)
    print(f"live page: {url}  (stops when the collector exits)", file=sys.stderr, flush=True)


def _stop_signal_as_ctrl_c() -> None:
    import signal

    name = "SIGBREAK" if sys.platform == "win32" else "SIGTERM"
    if hasattr(signal, name):
        signal.signal(getattr(signal, name), signal.default_int_handler)


def child_log_args(args: argparse.Namespace) -> list[str]:
    """The collector's --log-level / --log-json for its analyzer child, so `--log-level warning` quiets both
    (first: an explicit --analyzer-args '--log-level debug' still wins)."""
    return ["--log-level", args.log_level] + (["--log-json"] if args.log_json else [])


async def _main_with_signals(opts: BatchOptions) -> Collected:
    import signal

    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    # SIGTERM (Ctrl-Break on Windows, which the demo sends its children) ends the batch like Ctrl-C
    # does: finished requests stay recorded, batch.end is written.
    if task is not None and sys.platform != "win32":
        loop.add_signal_handler(signal.SIGTERM, task.cancel)
    elif task is not None and hasattr(signal, "SIGBREAK"):
        signal.signal(signal.SIGBREAK, lambda *_: loop.call_soon_threadsafe(task.cancel))
    try:
        return await collect_batch(opts)
    except asyncio.CancelledError:
        return Collected(EXIT_INTERRUPTED)
