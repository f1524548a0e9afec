"""python -m analyzer — turn a batch's message stream into results (CSV, JSON, Parquet, plots, report).

    python -m analyzer --batch data/experiments_2            # replay data/experiments_2/raw/stream.msgpack
    python -m analyzer --live                                 # analyse each batch as its batch.end arrives
    python -m analyzer --live --batch data/experiments_2 --once
    python -m analyzer --live --serve 127.0.0.1:8765          # ... and the live page at http://127.0.0.1:8765/

Exit codes: 0 done, 2 bad input (not a batch directory, no or unreadable recording).
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from analyzer import clock, columnar, i18n, load_curve, memory, outputs, pipeline, stream, tables
from analyzer.energy import DEFAULT_CPU_TDP_W
from shared import bus
from shared.batch import BatchDir
from shared.listen import ALLOW_REMOTE_FLAG, ListenError, check_listen, parse_listen
from shared.cli import add_curve_args, add_log_args, curve_keys
from shared.logs import configure_logging, get_logger
from shared.recording import RecordingError, read_recording

log = get_logger("analyzer.cli")

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130  # Ctrl-C
EXIT_OUTPUT_LOCKED = 3  # analysed and written, but a file open in another program kept its old version


class BadInput(Exception):
    """Input the analyzer cannot use; the message names the path and the fix."""


def _tdp_default() -> float:
    raw = os.environ.get("CPU_TDP_W")
    if raw is None:
        return DEFAULT_CPU_TDP_W
    try:
        value = float(raw)
    except ValueError:
        raise BadInput(f"environment CPU_TDP_W={raw!r} is not a number; set it to the CPU's TDP in watts (e.g. 65)")
    if value <= 0:
        raise BadInput(f"environment CPU_TDP_W={raw!r} must be positive (the CPU's TDP in watts)")
    return value


# repeated after the long list of options, where a reader of --help ends up
EPILOG = """examples:
  python -m analyzer --batch data/experiments_2             # replay a recorded batch into its summary/
  python -m analyzer --live                                 # analyse each batch as its batch.end arrives
  python -m analyzer --live --serve 127.0.0.1:8765          # ... and serve the live page (power, requests, energy)
  python -m analyzer --live --publish-endpoint              # ... and publish each request's row (ana.row)
"""


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m analyzer", description=__doc__, epilog=EPILOG,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=Path, help="batch directory (replay its raw/stream.msgpack; with --live: "
                                               "where the live batch's outputs go)")
    ap.add_argument("--live", action="store_true", help="subscribe to the bus and analyse each batch at batch.end")
    ap.add_argument("--telemetry-endpoint", default=None, action="append",
                    help="telemetry PUB to subscribe to; repeat it for several daemons (default: "
                    f"env {bus.ENV_TELEMETRY} or {bus.TELEMETRY_ENDPOINT})")
    ap.add_argument("--events-endpoint", default=None, help="collector PUB to subscribe to (default: "
                    f"env {bus.ENV_EVENTS} or {bus.EVENTS_ENDPOINT})")
    add_curve_args(ap)
    ap.add_argument("--telemetry-server-key", type=Path, action="append", default=None, metavar="FILE",
                    help="live, several CURVE daemons: each one's public .key, in the order of --telemetry-endpoint "
                         "(default: --curve-server-key for all)")
    ap.add_argument("--out-root", type=Path, help="live: parent of batch directories when batch.start's config "
                                                  "names neither exp_dir nor out_dir")
    ap.add_argument("--once", action="store_true", help="live: exit after the first batch")
    ap.add_argument("--exit-after-s", type=float, default=None, help="live: stop after this many seconds")
    ap.add_argument("--grace-s", type=float, default=1.0, help="live: wait this long after batch.end for "
                                                               "in-flight telemetry (default 1)")
    ap.add_argument("--spool-dir", type=Path, default=None, metavar="DIR",
                    help="live: where an open batch's messages are spooled until its batch.end (a directory per "
                         "process, removed after; about 110 MB per GPU-hour at 100 Hz). Default: the system temp "
                         "directory; where that is in memory (tmpfs), pass a directory on disk")
    ap.add_argument("--publish-endpoint", nargs="?", const="", default=None, metavar="ENDPOINT",
                    help="live: publish each request's analysed row (topic ana.row) on this PUB endpoint as soon as "
                         "the telemetry after its end has arrived, and the batch's final rows at batch.end "
                         f"(without a value: env {bus.ENV_ANALYSIS} or {bus.ANALYSIS_ENDPOINT})")
    ap.add_argument("--serve", default=None, metavar="HOST:PORT",
                    help="live: serve the live page here (power, requests in flight, each answer's energy; e.g. "
                         "127.0.0.1:8765; port 0 picks a free one). Loopback only unless --allow-remote: the page has "
                         "no authentication of its own, whatever CURVE keys the bus uses")
    ap.add_argument(ALLOW_REMOTE_FLAG, action="store_true",
                    help="allow a non-loopback --serve address (no authentication: a warning is logged)")
    ap.add_argument("--no-outputs", action="store_true",
                    help="live: write no files, only publish rows and serve the page (what `python -m collector "
                         "--serve` starts: the collector's own analysis of its recording writes the batch's files)")
    ap.add_argument("--row-settle-s", type=float, default=0.3,
                    help="live: a request's row waits for telemetry this far past its end (default %(default)s s)")
    ap.add_argument("--row-timeout-s", type=float, default=5.0,
                    help="live: ... but at most this long after its req.end arrived; then the row goes out with "
                         "the telemetry there is, and says why its energy is missing (default %(default)s s)")
    ap.add_argument("--lookback-s", type=float, default=stream.DEFAULT_LOOKBACK_S,
                    help="telemetry kept from before batch.start, for the idle baseline (default %(default)s s)")
    ap.add_argument("--server-gpus", default="auto", metavar="SPEC",
                    help="with several telemetry hosts: the GPUs a request's energy counts. auto (default): those on "
                         "the LLM server's host (batch.start base_url; the collector's host for a loopback server); "
                         "all; or HOST, HOST/UUID, UUID comma-separated")
    ap.add_argument("--jobs", type=int, default=1, metavar="N",
                    help="processes that measure a long recording's ten-minute slabs, read from its columnar copy "
                         "(default 1: all in this process; each more adds a worker with its imports and a slab of its "
                         "own, ~350 MiB at 8 GPUs, for up to a sixth less wall time on long multi-GPU recordings)")
    ap.add_argument("--idle-baseline", action="store_true", help="subtract the GPU idle power measured before "
                                                                 "the first request (gpu_energy_net_j)")
    ap.add_argument("--cpu-tdp-w", type=float, default=None, help="CPU TDP in W for cpu_energy_j_approx "
                                                                  "(default: the batch's recorded CPU_TDP_W (collector --cpu-tdp-w, config.py, env), else env "
                                                                  "CPU_TDP_W, else 65)")
    ap.add_argument("--metric-percentiles", default=None, metavar="Q,Q",
                    help="percentiles in stats.csv beside the median, comma-separated (default: 90,99; "
                         "as vLLM's bench serve --metric-percentiles)")
    ap.add_argument("--goodput", nargs="+", default=None, metavar="KEY:MS",
                    help="SLOs in ms (vLLM's keys): ttft:500 tpot:50 e2el:10000; per level goodput_share, "
                         "goodput_rps and J per good request in load_curve.csv (default: the collector's --goodput)")
    ap.add_argument("--no-quality", action="store_true", help="skip the quality step (columns left empty)")
    ap.add_argument("--bart-checkpoint", default=None, help="BARTScore checkpoint (name or local path)")
    ap.add_argument("--no-bart", action="store_true",
                    help="score QA/summary by chrF / 100 without loading a BARTScore checkpoint (offline machines)")
    ap.add_argument("--device", default=None, help="quality device: cpu, cuda, cuda:1 (default: cuda if available)")
    ap.add_argument("--unsafe-code-tests-without-sandbox", dest="unsafe_code_tests", action="store_true",
                    help="where no sandbox (bubblewrap) is available, run model-written code tests as your user "
                         "anyway (UNSAFE: the code can read your files and use the network); default: skip them")
    ap.add_argument("--no-plots", action="store_true", help="skip the PNG plots (report.html draws its own)")
    ap.add_argument("--report-lang", "--lang", dest="report_lang", choices=i18n.LANG_CHOICES, default="both",
                    help="which reports: en = report.md/report.html, zh = report.zh.md/report.zh.html (the English "
                         "ones are left as they are), both (default; auto is the same); CSV column names never change")
    ap.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_log_args(ap)
    return ap


def options_from(args: argparse.Namespace) -> pipeline.Options:
    tdp = args.cpu_tdp_w if args.cpu_tdp_w is not None else _tdp_default()
    if tdp <= 0:
        raise BadInput(f"--cpu-tdp-w {tdp} must be positive (the CPU's TDP in watts)")
    qopts: dict[str, Any] = {}
    if args.bart_checkpoint:
        qopts["bart_checkpoint"] = args.bart_checkpoint
    if args.device:
        qopts["device"] = args.device
    if args.unsafe_code_tests:
        qopts["unsafe_code_tests_without_sandbox"] = True
    if args.no_bart:
        qopts["enable_bart"] = False
    if args.jobs is not None and args.jobs < 1:
        raise BadInput(f"--jobs {args.jobs}: give a number of processes, 1 or more (1: no worker processes)")
    return pipeline.Options(cpu_tdp_w=tdp, cpu_tdp_w_explicit=args.cpu_tdp_w is not None, idle_baseline=args.idle_baseline, quality=not args.no_quality,
                            quality_options=qopts, progress=not args.no_progress,
                            metric_percentiles=parse_percentiles(args.metric_percentiles),
                            server_gpus=args.server_gpus, goodput=parse_goodput(args.goodput), jobs=args.jobs)


def parse_goodput(items: list[str] | None) -> dict[str, float] | None:
    """``["ttft:500", "tpot:50"]`` → {"ttft": 500.0, "tpot": 50.0}; None gives the collector's."""
    if items is None:
        return None
    out: dict[str, float] = {}
    for item in items:
        key, sep, ms = item.partition(":")
        try:
            value = float(ms) if sep else float("nan")
        except ValueError:
            value = float("nan")
        if key not in load_curve.SLO_COLUMNS or not value > 0:
            raise BadInput(f"--goodput {item!r}: give KEY:MS with KEY one of {', '.join(load_curve.SLO_COLUMNS)} "
                           "and a positive number of milliseconds, e.g. --goodput ttft:500 tpot:50")
        out[key] = value
    return out


def parse_percentiles(text: str | None) -> tuple[float, ...]:
    """``"50,90,99.9"`` → (50.0, 90.0, 99.9); each in (0, 100]; None gives the default."""
    if text is None:
        return tables.DEFAULT_PERCENTILES
    out = []
    for part in text.split(","):
        try:
            q = float(part)
        except ValueError:
            raise BadInput(f"--metric-percentiles {text!r}: {part.strip()!r} is not a number; give e.g. 50,90,99")
        if not 0 < q <= 100:
            raise BadInput(f"--metric-percentiles {text!r}: {q:g} is outside (0, 100]; give e.g. 50,90,99")
        out.append(q)
    return tuple(dict.fromkeys(out))


def analysed_line(results: list[dict]) -> str:
    """``11 request(s) (10 ok, 1 failed)``: which rows results.csv holds, beside the collector's ``ok 10``."""
    counts: dict[str, int] = {}
    for r in results:
        counts[str(r.get("status"))] = counts.get(str(r.get("status")), 0) + 1
    order = sorted(counts, key=lambda k: (k != "ok", k))
    detail = f" ({', '.join(f'{counts[k]} {k}' for k in order)})" if counts else ""
    return f"{len(results)} request(s){detail}"


def report_lang(value: str) -> str:
    return i18n.check_choice(value)


def analyse_messages(items, bd: BatchDir, opts: pipeline.Options, lookback_s: float, plots: bool,
                     problem: str | None = None, lang: str = "en") -> pipeline.Analysis:
    """A message list in memory → BatchData → Analysis → files (the tests' and tools' way in; both CLI inputs
    read columns: analyse_data)."""
    return analyse_data(stream.build(items, lookback_s), bd, opts, plots, problem, lang)


def analyse_data(data: stream.BatchData, bd: BatchDir, opts: pipeline.Options, plots: bool,
                 problem: str | None = None, lang: str = "en", samples_key: str | None = None) -> pipeline.Analysis:
    """BatchData → Analysis → files (built from columns: ``--batch`` from the recording, ``--live`` from its spool).
    ``samples_key``: columnar.samples_key of the recording (sample files already holding it are kept)."""
    if data.invalid:  # each was logged as it was read (the first few): the count, on every run
        log.warning("messages_invalid", count=data.invalid, note="not as shared/messages.py declares: dropped, "
                    "the rest analysed")
    too_far = clock.refused(data.clock)
    if too_far:  # windows cannot be joined with samples this uncertain: no figures rather than wrong ones
        raise BadInput(f"{bd.root}: batch refused: " + "; ".join(too_far))
    analysis = pipeline.analyze(data, dataclasses.replace(opts, batch_dir=bd.root), recording_problem=problem)
    outputs.write_all(analysis, bd, make_plots=plots, progress=opts.progress, lang=lang, samples_key=samples_key)
    return analysis


def load_batch(root: Path):
    """(BatchDir, messages, problem) of a recorded batch, or BadInput naming the path and the fix."""
    bd = _batch_dir(root)
    try:
        _header, items, problem = read_recording(bd.stream)
    except RecordingError as exc:
        raise BadInput(f"{exc}") from exc
    return bd, items, problem


def load_columns(root: Path) -> tuple[BatchDir, columnar.Decoded, str | None]:
    """(BatchDir, the recording's columns, problem): from the columnar copy when it is this recording's,
    else one streaming pass over stream.msgpack (which writes the copy)."""
    bd = _batch_dir(root)
    try:
        dec, problem = columnar.load(bd.stream)
    except RecordingError as exc:
        raise BadInput(f"{exc}") from exc
    return bd, dec, problem


def load_data(root: Path, lookback_s: float) -> tuple[BatchDir, stream.BatchData, str | None]:
    """(BatchDir, the recording's BatchData, problem): its GPU samples left in the columnar copy and
    read a slab of time at a time (analyzer.gpu_store), the copy written first when missing or stale."""
    bd = _batch_dir(root)
    try:
        data, problem = columnar.load_batch(bd.stream, lookback_s)
    except RecordingError as exc:
        raise BadInput(f"{exc}") from exc
    return bd, data, problem


def _batch_dir(root: Path) -> BatchDir:
    if not root.exists():
        raise BadInput(f"{root}: no such directory; pass a batch directory such as data/experiments_2 "
                       "(the one that holds raw/stream.msgpack)")
    if not root.is_dir():
        raise BadInput(f"{root}: not a directory; pass the batch directory, not a file inside it")
    bd = BatchDir(root)
    if not bd.stream.is_file():
        raise BadInput(f"{bd.stream}: not found, so {root} is not a recorded batch; run the collector "
                       "(python -m collector --exp-dir DIR) or telemetry recording first, or pass the right directory")
    return bd


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, json=args.log_json)
    try:
        if not args.live and args.batch is None:
            raise BadInput("nothing to analyse: pass --batch DIR (a recorded batch) or --live (subscribe to the bus)")
        if args.serve is not None and not args.live:
            raise BadInput("--serve is the live page of the live analysis: pass --live --serve HOST:PORT")
        opts = options_from(args)
        if args.live:
            return _live(args, opts)
        memory.fix_mmap_threshold()  # (a day's arrays handed back as they are freed, whatever came before)
        bd, data, problem = load_data(args.batch, args.lookback_s)
        key = columnar.samples_key(getattr(data.source, "recording", None) or {}, args.lookback_s)
        analysis = analyse_data(data, bd, opts, not args.no_plots, problem, report_lang(args.report_lang), key)
        print(f"analysed {analysed_line(analysis.results)} -> {bd.summary / 'results.csv'}", flush=True)
        return 0
    except outputs.OutputsLocked as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_OUTPUT_LOCKED
    except KeyboardInterrupt:  # Ctrl-C (also the collector's closing analysis): one line, no traceback
        again = f"python -m analyzer --batch {args.batch}" if args.batch else "python -m analyzer --live"
        print(f"analysis interrupted: the files it had not replaced yet keep their previous version; run it "
              f"again with {again}", file=sys.stderr, flush=True)
        return EXIT_INTERRUPTED
    except BadInput as exc:
        log.error("bad_input", problem=str(exc))
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_BAD_INPUT


def _live(args: argparse.Namespace, opts: pipeline.Options) -> int:
    import zmq

    from analyzer.live import resolve_batch_dir, run_live

    try:
        # per-daemon keys alone (events on loopback): no shared server key is needed
        curve = (None if args.telemetry_server_key and not args.curve_server_key
                 else curve_keys(args, server_key_required=True))
    except bus.BusSecurityError as exc:
        raise BadInput(str(exc)) from exc
    tel = args.telemetry_endpoint or [bus.telemetry_endpoint()]
    endpoints = [*tel, args.events_endpoint or bus.events_endpoint()]
    if args.telemetry_server_key:
        if not args.curve_secret or len(args.telemetry_server_key) != len(tel):
            raise BadInput(f"{len(args.telemetry_server_key)} --telemetry-server-key for {len(tel)} "
                           "--telemetry-endpoint; give one daemon .key per endpoint, in order, with --curve-secret")
        try:
            curve = [bus.CurveKeys.from_secret_file(args.curve_secret, f) for f in args.telemetry_server_key] + [curve]
        except bus.BusSecurityError as exc:
            raise BadInput(str(exc)) from exc

    def on_batch(batch, service=None):
        # batch: the finished batch's spool (analyzer.live_spool), read back by the batch analyzer's reader
        data_start = batch.batch_start
        if batch.problem:  # its spool could not be written: no analysis rather than a partial one
            log.error("live_batch_not_analysed", batch=(data_start or {}).get("batch"), problem=batch.problem)
            print(f"error: {batch.problem}", file=sys.stderr, flush=True)
            return
        root = None if args.no_outputs else resolve_batch_dir(data_start, args.batch, args.out_root)
        if root is None and args.no_outputs:
            if service is not None:
                service.on_analysis(pipeline.analyze(batch.data(args.lookback_s), opts))
            return
        if root is None:
            log.error("live_no_output_dir", batch=(data_start or {}).get("batch"),
                      fix="pass --batch DIR or --out-root DIR, or have the collector put out_dir in its config")
            if service is not None:  # no files, but the final rows still go out
                service.on_analysis(pipeline.analyze(batch.data(args.lookback_s), opts))
            return
        try:
            analysis = analyse_data(batch.data(args.lookback_s), BatchDir(root), opts, not args.no_plots,
                                    lang=report_lang(args.report_lang))
        except BadInput as exc:  # one refused batch (clock too uncertain) must not end the live analyzer
            log.error("batch_refused", batch=str(root), problem=str(exc))
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return
        except outputs.OutputsLocked as exc:  # a CSV open in Excel: the rest is written, the live analyzer goes on
            print(f"error: {exc}", file=sys.stderr, flush=True)
            return
        print(f"analysed {analysed_line(analysis.results)} -> {root / 'summary' / 'results.csv'}", flush=True)
        if service is not None:
            service.on_analysis(analysis)

    ctx = zmq.Context()
    service = None
    try:
        service = _live_service(ctx, args, opts)
        run_live(ctx, endpoints, lambda batch: on_batch(batch, service), args.lookback_s, args.grace_s,
                 1 if args.once else None, args.exit_after_s, curve,
                 on_message=service.on_message if service else None, on_tick=service.on_tick if service else None,
                 on_ready=service.ready if service else None, spool_dir=args.spool_dir)
    finally:
        if service is not None:
            service.close()
        ctx.destroy(linger=0)
    return 0


def _live_service(ctx, args: argparse.Namespace, opts: pipeline.Options):
    """Per-request rows (``--publish-endpoint``) and the live page (``--serve``); None when neither is asked."""
    if args.publish_endpoint is None and args.serve is None:
        return None
    from analyzer.live_rows import RowTracker
    from analyzer.live_service import LiveService
    from shared.messages import source_id

    publish = viewer = server = None
    if args.publish_endpoint is not None:
        endpoint = args.publish_endpoint or bus.analysis_endpoint()

        def publish():
            # bound once the bus sockets are connected: a parent that waits for this endpoint (the proxy)
            # then knows this process hears every event it sends after
            try:
                sock = bus.bind_pub(ctx, endpoint, curve=_publish_curve(args, endpoint))
            except bus.BusError as exc:
                raise BadInput(f"--publish-endpoint: {exc}") from exc
            log.info("live_rows_publishing", endpoint=endpoint)
            return bus.Publisher(sock, source_id("analyzer"))
    if args.serve is not None:
        from analyzer.live_page import PageHub, PageServer

        try:
            listen = parse_listen(args.serve, "--serve")
            warning = check_listen(listen, args.allow_remote, "--serve")
        except ListenError as exc:
            raise BadInput(str(exc)) from exc
        if warning:
            log.warning("live_page_exposed", listen=str(listen), note=warning)
            print(f"warning: {warning}", file=sys.stderr, flush=True)
        viewer = PageHub(lang=page_lang(args.report_lang))
        server = PageServer(viewer, listen.host, listen.port)
        try:
            url = server.start()
        except OSError as exc:
            raise BadInput(f"--serve {listen}: cannot listen there ({exc}); pick a free port") from exc
        log.info("live_page", url=url)
    tracker = RowTracker(opts, settle_s=args.row_settle_s, timeout_s=args.row_timeout_s, lookback_s=args.lookback_s)
    return LiveService(tracker, None, viewer, server, publish=publish)


def page_lang(value: str) -> str:
    """One language for the live page from the reports' flag (en, zh; auto or both: the locale's)."""
    return value if value in i18n.LANGS else i18n.lang_from_env()


def _publish_curve(args: argparse.Namespace, endpoint: str):
    """A non-loopback publish endpoint needs this process's own CURVE secret (as every publisher)."""
    if bus.is_loopback(endpoint) or not args.curve_secret:
        return None
    return bus.CurveKeys.from_secret_file(args.curve_secret, None)
