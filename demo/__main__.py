"""``python -m demo`` (``make demo``): the whole pipeline on a real CPU model, in a few minutes.

It starts the telemetry daemon (SIMULATED GPU, labelled so everywhere; real psutil and RAPL
host data) on a free loopback port, starts a real LLM server on the CPU (SmolLM2-135M-Instruct
via llama.cpp, `python -m demo.llm_server`), runs a small batch through the collector (progress
bar), lets the collector run the analyzer, and prints where the CSVs, plots and report are with
a table of the key figures. Everything it started is stopped at the end, also on Ctrl-C.

    python -m demo                                   # 4 tasks x 2 languages x 2 runs, short prompts, 80 tokens
    python -m demo --runs 1 --tasks qa --loads short --max-tokens 16
    python -m demo --ollama --models gemma3:1b       # an Ollama server at OLLAMA_HOST instead

Every successful row gets a quality score and a 效质比 offline: BARTScore needs a BART checkpoint
(set BARTSCORE_CHECKPOINT to a local directory); without one QA and summary quality is chrF / 100
(quality_basis = chrf) and the demo says why. The report is summary/report.html (--report-lang zh
for Chinese; the default follows the locale).
Exit codes: 0 done, 1 a part could not start, 2 bad arguments, 130 interrupted; otherwise the collector's.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit
from pathlib import Path

from demo import figures
from demo.plan import DEFAULT_LANGS, DEFAULT_LOADS, DEFAULT_TASKS, SUITE_MAX_TOKENS, DemoSettings, analyzer_flags, collector_args, server_args, \
    telemetry_args
from demo.procs import Child, wait_until
from shared.batch import BatchDir, new_batch_dir
from shared.bus import free_port
from shared.logs import configure_logging, get_logger
from shared.procs import ctrl_c_interrupts

log = get_logger("demo")

EXIT_OK, EXIT_SETUP, EXIT_INTERRUPTED = 0, 1, 130
SERVER_START_TIMEOUT_S = 180.0


class DemoError(RuntimeError):
    """A part of the demo could not start; the message says which and what to do."""


def _http_ok(url: str, timeout_s: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as resp:
            json.loads(resp.read() or b"{}")
            return resp.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def build_parser() -> argparse.ArgumentParser:
    from collector.tasks import LOADS, TASKS

    ap = argparse.ArgumentParser(prog="python -m demo", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("data"),
                    help="parent directory of the new experiments_{index}_{time} batch (default: data)")
    ap.add_argument("--runs", type=int, default=None,
                    help="repetitions of every request (default 2; 1 with --suite: pass@1)")
    ap.add_argument("--tasks", nargs="+", choices=TASKS, default=None,
                    help=f"built-in tasks (default: {' '.join(DEFAULT_TASKS)}; none with --suite unless given)")
    ap.add_argument("--suite", action="append", default=None,
                    help="a benchmark suite: humaneval, gsm8k=FILE, choice=FILE, reference=FILE (repeatable)")
    ap.add_argument("--limit", type=int, default=None, help="with --suite: the first N items of each suite")
    ap.add_argument("--sample", type=int, default=None, help="with --suite: a stable random N items")
    ap.add_argument("--sample-seed", dest="sample_seed", type=int, default=0, help="seed of --sample (default 0)")
    ap.add_argument("--loads", nargs="+", choices=LOADS, default=list(DEFAULT_LOADS),
                    help=f"prompt loads (default: {' '.join(DEFAULT_LOADS)})")
    ap.add_argument("--langs", nargs="+", choices=("en", "zh"), default=list(DEFAULT_LANGS),
                    help=f"prompt languages (default: {' '.join(DEFAULT_LANGS)})")
    ap.add_argument("--max-tokens", "--max_tokens", dest="max_tokens", type=int, default=None,
                    help="max new tokens per request (default 80; 384 with --suite, room for a function)")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds one request may take (default 300)")
    ap.add_argument("--ollama", action="store_true",
                    help="use the Ollama server at OLLAMA_HOST (default 127.0.0.1:11434) instead of starting SmolLM2")
    ap.add_argument("--models", nargs="+", default=None, help="with --ollama: the models to run (required)")
    ap.add_argument("--threads", type=int, default=min(4, os.cpu_count() or 1),
                    help="CPU threads of the SmolLM2 server (default: up to 4)")
    ap.add_argument("--no-quality", action="store_true", help="skip the analyzer's quality step (faster)")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots (report.html draws its own)")
    ap.add_argument("--report-lang", choices=("both", "en", "zh", "auto"), default="both",
                    help="which reports: en = report.html/.md, zh = report.zh.html/.md, both (default; auto is the same)")
    ap.add_argument("--serve", default="auto", metavar="HOST:PORT",
                    help="where the live page of the batch is served (power, requests in flight, each answer's "
                         "energy; the URL is printed); default auto: a free port on 127.0.0.1")
    ap.add_argument("--no-serve", action="store_true", help="no live page")
    ap.add_argument("--keep-running", action="store_true",
                    help="after the batch, keep the telemetry daemon and the LLM server running until Ctrl-C")
    ap.add_argument("--verbose", action="store_true", help="show the collector's and analyzer's info logs")
    ap.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"),
                    help="the demo's own log lines on stderr (default warning; info adds each child's start/stop)")
    ap.add_argument("--log-json", action="store_true", help="JSON log lines")
    return ap


def settings_from(args: argparse.Namespace) -> DemoSettings:
    suites = tuple(args.suite or ())
    tasks = tuple(args.tasks) if args.tasks else (() if suites else DEFAULT_TASKS)
    s = DemoSettings(out=args.out, tasks=tasks, loads=tuple(args.loads), langs=tuple(args.langs),
                     runs=args.runs if args.runs is not None else (1 if suites else 2),
                     suites=suites, limit=args.limit, sample=args.sample, sample_seed=args.sample_seed,
                     max_tokens=args.max_tokens if args.max_tokens is not None else (SUITE_MAX_TOKENS if suites else 80), timeout_s=args.timeout, ollama=args.ollama,
                     models=tuple(args.models or ()), verbose=args.verbose, quality=not args.no_quality,
                     plots=not args.no_plots, report_lang=args.report_lang,
                     serve=None if args.no_serve else (f"127.0.0.1:{free_port()}" if args.serve == "auto"
                                                       else args.serve))
    s.validate()
    return s


def _raise_on_sigterm() -> None:
    # SIGTERM ends the demo like Ctrl-C: the finally blocks stop every child.
    if hasattr(signal, "SIGTERM"):
        def handler(signum, frame):
            raise KeyboardInterrupt
        signal.signal(signal.SIGTERM, handler)


def start_llm_server(logs: Path, threads: int, children: list[Child], port: int) -> str:
    """Start the SmolLM2 server on ``port``; return its base URL once /health answers."""
    base_url = f"http://127.0.0.1:{port}"
    server = Child("llm_server", server_args(port, ctx=2048, threads=threads), logs / "llm_server.log")
    children.append(server)
    server.start()
    print(f"starting the SmolLM2-135M server on {base_url} (CPU, {threads} threads) ...", flush=True)
    if not wait_until(lambda: _http_ok(base_url + "/health"), SERVER_START_TIMEOUT_S, [server]):
        raise DemoError(f"the demo LLM server did not answer on {base_url} "
                        f"({'exited with ' + str(server.returncode) if not server.alive() else 'timed out'}); "
                        f"its log ({server.log_path}) ends with:\n{server.log_tail()}")
    return base_url


def check_model_files() -> None:
    from demo.llm_server import DemoServerError, find_gguf

    try:
        find_gguf()
    except DemoServerError as exc:
        raise DemoError(str(exc)) from exc


def ollama_url() -> str:
    from collector.backends import normalize_base_url

    return normalize_base_url(None, "ollama")


def check_ollama() -> str:
    """The Ollama base URL from OLLAMA_HOST, once /api/version answers."""
    base_url = ollama_url()
    if not _http_ok(base_url + "/api/version", timeout_s=3.0):
        raise DemoError(f"no Ollama server answers on {base_url}. Start it (`ollama serve`) or set "
                        "OLLAMA_HOST=host:port to where it runs; or drop --ollama to use the built-in CPU model")
    return base_url


def print_summary(batch: BatchDir) -> bool:
    """Where the outputs are, and the key figures. False when there is no results.csv."""
    results = batch.summary / "results.csv"
    print(f"\nbatch: {batch.root}")
    if not results.is_file():
        print(f"  no {results}: the analysis did not complete; rerun it with "
              f"`python -m analyzer --batch {batch.root}`")
        return False
    rows = figures.read_results(results)
    listing = [("results (one row per request)", results),
               ("statistics (mean, variance, CI)", batch.summary / "stats.csv"),
               ("Pareto (energy vs quality)", batch.summary / "pareto.csv")]
    for lang, name in (("en", "report"), ("zh", "report.zh")):  # whichever --report-lang wrote
        if (batch.summary / f"{name}.html").exists():
            listing += [(f"report, {lang} (open in a browser)", batch.summary / f"{name}.html"),
                        (f"report, {lang} (Markdown)", batch.summary / f"{name}.md")]
    listing += [("recording (replayable)", batch.stream), ("per-request JSON", batch.raw),
                ("generated texts", batch.texts)]
    for label, path in listing:
        if path.exists():
            print(f"  {label:34s} {path}")
    plots = sorted(batch.plots.glob("*.png")) if batch.plots.is_dir() else []
    if plots:
        print(f"  {'plots (' + str(len(plots)) + ')':34s} {batch.plots}")
        for p in plots:
            print(f"      {p.name}")
    print(f"  {'demo process logs':34s} {batch.root / 'demo_logs'}")
    figs = figures.key_figures(rows)
    print()
    print(figures.format_table(figs))
    suites_csv = batch.summary / "suites.csv"
    if suites_csv.is_file():
        print("\nbenchmark suites (zero-shot generative; pass@1 = accuracy over single samples):")
        print(figures.format_suites(figures.read_results(suites_csv)))
    if any(f["gpu_simulated"] for f in figs):
        print("\nGPU figures are SIMULATED: no NVIDIA GPU was measured (telemetry ran with --gpu sim, power follows "
              "the CPU load). CPU figures come from the real host (psutil; RAPL where readable).")
    note = figures.bartscore_note(rows)
    if note:
        print(f"\nBARTScore is empty, so QA and summary quality is chrF / 100 (quality_basis = chrf): {note}")
    page = "report.html" if (batch.summary / "report.html").exists() else "report.zh.html"
    print(f"\n效质比 = quality points per kJ of GPU + CPU energy (higher is better); {page} defines it and "
          "lists any problems.")
    return True


def run_demo(s: DemoSettings, threads: int, keep_running: bool) -> int:
    # absolute: the children run in the project root, the user may not
    batch = new_batch_dir(s.out.resolve())
    logs = batch.root / "demo_logs"
    logs.mkdir(parents=True, exist_ok=True)
    tel_ep = f"tcp://127.0.0.1:{free_port()}"
    ev_ep = f"tcp://127.0.0.1:{free_port()}"
    children: list[Child] = []  # in start order; stopped in reverse (collector before server and daemon)
    try:
        # the server's port first: the daemon measures that server's own CPU time
        port = urlsplit(ollama_url()).port if s.ollama else free_port()
        if not s.ollama:
            check_model_files()  # a clear message before any process starts
        telemetry = Child("telemetry", telemetry_args(tel_ep, port), logs / "telemetry.log")
        children.append(telemetry)
        telemetry.start()
        print(f"telemetry daemon on {tel_ep} (SIMULATED GPU; real host CPU/memory/RAPL)", flush=True)
        base_url = check_ollama() if s.ollama else start_llm_server(logs, threads, children, port)
        builtin = len(s.tasks) * len(s.loads) * len(s.langs) * s.runs * len(s.model_names)
        suites = f" + the items of {', '.join(s.suites)} × {s.runs} run(s)" if s.suites else ""
        print(f"running {builtin} built-in request(s){suites} -> {batch.root}", flush=True)
        # the collector's output is inherited: its progress bar is the demo's progress bar
        collector = Child("collector", collector_args(s, batch.root, base_url, tel_ep, ev_ep))
        children.append(collector)  # tracked before it starts: a Ctrl-C in between still stops it
        collector.start()
        rc = collector.wait()
        if rc != 0:
            log.error("collector_failed", returncode=rc, batch=str(batch.root),
                      telemetry_log=telemetry.log_tail(800) if not telemetry.alive() else "running")
            print_summary(batch)
            return rc
        if not (batch.summary / "results.csv").is_file():
            log.warning("analyzer_rerun", reason="the collector's analyzer run left no results.csv")
            analyzer = Child("analyzer", ["analyzer", "--batch", str(batch.root), *analyzer_flags(s)])
            children.append(analyzer)
            analyzer.start()
            analyzer.wait()
        ok = print_summary(batch)
        if keep_running:
            print(f"\nstill running (Ctrl-C to stop): telemetry {tel_ep} LLM server {base_url}", flush=True)
            services = [c for c in children if c.name in ("telemetry", "llm_server")]
            try:
                while all(c.alive() for c in services):
                    time.sleep(0.5)
                log.warning("service_exited", children={c.name: c.returncode for c in services})
            except KeyboardInterrupt:
                pass  # the documented way to end --keep-running: not an interruption of the batch
        return EXIT_OK if ok else EXIT_SETUP
    except DemoError as exc:
        log.error("demo_failed", error=str(exc))
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_SETUP
    except KeyboardInterrupt:
        log.warning("demo_interrupted", batch=str(batch.root),
                    note="finished requests stay in the recording; continue with python -m collector "
                         f"--exp-dir {batch.root} --resume")
        return EXIT_INTERRUPTED
    finally:
        # the collector first (it writes batch.end), then the server and the daemon it used
        for child in reversed(children):
            try:
                child.stop()
            except KeyboardInterrupt:  # a second Ctrl-C: kill this one without waiting, go on with the rest
                child.kill()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # The demo never downloads model weights (its children inherit this): BARTScore uses a local
    # checkpoint (BARTSCORE_CHECKPOINT) or the Hugging Face cache, else stays empty and says why.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    configure_logging(args.log_level, json=args.log_json)
    try:
        s = settings_from(args)
    except ValueError as exc:
        log.error("bad_arguments", error=str(exc))
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _raise_on_sigterm()
    return run_demo(s, args.threads, args.keep_running)


if __name__ == "__main__":
    ctrl_c_interrupts()
    sys.exit(main())
