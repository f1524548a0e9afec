"""Live view of the telemetry bus: a compact table refreshed in place, or JSON lines.

    python -m telemetry.tail                 # table, refreshed twice a second
    python -m telemetry.tail --json --count 20
    python -m telemetry.tail --duration 10 --endpoint tcp://127.0.0.1:5556
    python -m telemetry.tail --requests      # one line per request event of a running batch

Attach and detach at any time; the daemon never waits for it.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from shared import timebase
from shared.bus import ANALYSIS_ENDPOINT, analysis_endpoint, events_endpoint
from shared.cli import add_subscriber_args, subscriptions
from shared.escape import json_line, terminal_text
from shared.logs import get_logger
from shared.messages import (BATCH_END, BATCH_START, REQ_END, REQ_FIRST_TOKEN, REQ_PROGRESS, REQ_START, TEL_GPU, TEL_HB,
                             TEL_HOST)

log = get_logger("telemetry.tail")


def _num(value: Any, fmt: str, scale: float = 1.0) -> str:
    """A number formatted, or '-' when the field is absent (absent is not zero)."""
    return "-" if value is None else format(value * scale, fmt)


def to_json_line(topic: str, payload: dict[str, Any]) -> str:
    """One JSON line ``{"topic": ..., **payload}`` (int map keys such as pids become strings)."""
    return json_line({"topic": topic, **payload}, default=str, separators=(",", ":"))


ANA_ROW = "ana.row"  # the live analyzer's per-request rows (its --publish-endpoint; shared.messages.ANA_ROW)


def output_tokens(api: dict[str, Any]) -> Any:
    """The server's count of generated tokens, under whichever name it reports it."""
    for value in (api.get("eval_count"), api.get("completion_tokens"), (api.get("timings") or {}).get("predicted_n")):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return value
    return None


class ModelTotals:
    """Per model: requests finished, tokens generated, GPU joules (from ana.row rows). Pure."""

    def __init__(self):
        self.models: dict[str, dict[str, float]] = {}
        self._model_of: dict[str, str] = {}      # rid → model, from req.start
        self._energy_seen: set[str] = set()      # a rid's energy counts once (its row may come again, final)
        self._row_seen: set[str] = set()         # rids whose first row came (the others await their energy)

    def update(self, topic: str, p: dict[str, Any]) -> str | None:
        """Fold one message in; returns the model it touched, or None."""
        rid = str(p.get("rid", ""))
        if topic == REQ_START and not p.get("warmup"):
            self._model_of[rid] = str(p.get("model") or "?")
            return None
        if topic == REQ_END and rid in self._model_of:
            model = self._model_of[rid]
            t = self.models.setdefault(model, {"requests": 0, "tokens": 0, "joules": 0.0, "rows": 0})
            t["requests"] += 1
            t["tokens"] += output_tokens(p.get("api") or {}) or 0
            return model
        if topic == ANA_ROW and rid not in self._row_seen:  # the request's row came, with or without energy
            self._row_seen.add(rid)
            model = self._model_of.get(rid) or str((p.get("row") or {}).get("model") or "?")
            self.models.setdefault(model, {"requests": 0, "tokens": 0, "joules": 0.0, "rows": 0})["rows"] += 1
            if not p.get("energy_ready"):
                return model
        if topic == ANA_ROW and p.get("energy_ready") and rid not in self._energy_seen:
            row = p.get("row") or {}
            energy = row.get("gpu_energy_j")
            if not isinstance(energy, (int, float)) or isinstance(energy, bool):
                return None
            self._energy_seen.add(rid)
            model = self._model_of.pop(rid, None) or str(row.get("model") or "?")
            t = self.models.setdefault(model, {"requests": 0, "tokens": 0, "joules": 0.0, "rows": 0})
            t["joules"] += float(energy)
            return model
        return None

    def line(self, model: str) -> str:
        t = self.models[model]
        # joules are the GPU's (gpu_energy_j); requests whose row has not come yet are not zero: say so
        awaiting = t["requests"] - t["rows"]
        return (f"  {model}: {t['requests']} request(s), {t['tokens']:.0f} tokens, {t['joules']:.1f} GPU J"
                + (f" ({awaiting} awaiting energy)" if awaiting > 0 else ""))


class NotStreamed:
    """The requests the measuring proxy saw asked for a whole answer (req.start ``proxy.stream`` false):
    their req.end has no time to first token, and says why. Bounded: the newest ``MAX`` only."""
    MAX = 10_000

    def __init__(self):
        self.rids: dict[str, None] = {}

    def update(self, topic: str, p: dict[str, Any]) -> bool | None:
        """For a req.end: False when its request was not streamed, else None (unknown or streamed)."""
        rid = str(p.get("rid"))
        if topic == REQ_START and (p.get("proxy") or {}).get("stream") is False:
            self.rids[rid] = None
            while len(self.rids) > self.MAX:
                del self.rids[next(iter(self.rids))]
        elif topic == REQ_END and rid in self.rids:
            del self.rids[rid]
            return False
        return None


def request_line(topic: str, p: dict[str, Any], streamed: bool | None = None) -> str | None:
    """One line per collector event (--requests), or None for other topics. ``streamed`` False: a
    req.end of a request answered whole (no time to first token to show)."""
    rid = p.get("rid", "")
    if topic == ANA_ROW:
        row = p.get("row") or {}
        if not p.get("energy_ready"):
            return f"energy {rid}  none: {p.get('reason') or 'unknown'}"
        return (f"energy {rid}  {_num(row.get('gpu_energy_j'), '.2f')} J  "
                f"{_num(row.get('j_per_token'), '.4f')} J/token")
    if topic == REQ_START:
        return f"start  {rid}" + ("  (warm-up)" if p.get("warmup") else "")
    if topic == REQ_FIRST_TOKEN:
        # a retried request sends one per attempt: numbered from 1, so retries are not identical lines
        attempt = p.get("attempt")
        return f"first  {rid}  {p.get('kind')}" + (f"  (attempt {attempt + 1})" if isinstance(attempt, int) else "")
    if topic == REQ_PROGRESS:  # at most 2/s per request while it streams
        basis = " (chunks)" if p.get("tokens_basis") == "chunks" else ""
        return f"tokens {rid}  {p.get('tokens_so_far', '-')} so far{basis}, {p.get('chars_so_far', '-')} chars"
    if topic == REQ_END:
        c, api = p.get("client") or {}, p.get("api") or {}
        head = "ok    " if p.get("ok") else "FAILED"
        tokens = output_tokens(api)
        ttft = ("ttft n/a (not streamed)" if streamed is False and c.get("first_token_s") is None else
                f"ttft {_num(c.get('first_token_s'), '.3f')} s")
        tail = (f"latency {_num(c.get('latency_s'), '.2f')} s  {ttft}  "
                f"tokens {'-' if tokens is None else tokens}")
        if c.get("retries"):
            tail += f"  after {c['retries'] + 1} attempts"
        if not p.get("ok"):
            tail += f"  {p.get('error_kind')}: {p.get('error')}"
        return f"{head} {rid}  {tail}"
    if topic == BATCH_START:
        return (f"batch  {p.get('batch')} started: {p.get('planned')} planned, {p.get('already_done', 0)} done before"
                + (f", missing models {p['missing_models']}" if p.get("missing_models") else ""))
    if topic == BATCH_END:
        return (f"batch  {p.get('batch')} ended: ok {p.get('ok')} failed {p.get('failed')} skipped {p.get('skipped')}"
                + ("  INTERRUPTED" if p.get("interrupted") else ""))
    return None


class TailState:
    """The latest message per GPU, host and heartbeat. Pure; :meth:`render` makes the table."""

    def __init__(self):
        self.gpus: dict[tuple[str, int], dict[str, Any]] = {}
        self.host: dict[str, Any] | None = None
        self.hb: dict[str, Any] | None = None
        self.messages = 0
        self.seq_gaps = 0
        self._last_seq: dict[str, int] = {}

    def update(self, topic: str, payload: dict[str, Any]) -> None:
        self.messages += 1
        src, seq = payload.get("src"), payload.get("seq")
        if isinstance(seq, int):
            last = self._last_seq.get(src)
            if last is not None and seq > last + 1:
                self.seq_gaps += seq - last - 1
            self._last_seq[src] = seq
        if topic == TEL_GPU:
            prev = self.gpus.get((src, payload.get("gpu")), {})
            # Slow fields arrive every n-th tick: keep the last ones shown between them.
            self.gpus[(src, payload.get("gpu"))] = {**prev, **payload}
        elif topic == TEL_HOST:
            self.host = payload
        elif topic == TEL_HB:
            self.hb = payload

    def render(self) -> str:
        lines = [f"{'gpu':>3} {'power W':>8} {'kind':>10} {'energy J':>11} {'util%':>5} {'mem MiB':>15} "
                 f"{'temp':>4} {'SM MHz':>6} {'P':>3}  name"]
        for (_src, _idx), g in sorted(self.gpus.items(), key=lambda kv: (str(kv[0][0]), kv[0][1])):
            mem = f"{_num(g.get('mem_used_mib'), '.0f')}/{_num(g.get('mem_total_mib'), '.0f')}"
            name = terminal_text(g.get("name", "")) + ("  [SIMULATED]" if g.get("simulated") else "")
            if g.get("errors"):  # driver and bus text: shown, never interpreted by the terminal
                name += f"  errors: {terminal_text(', '.join(map(str, g['errors'])))}"
            lines.append(f"{g.get('gpu', '?'):>3} {_num(g.get('power_mw'), '8.1f', 1e-3)} {g.get('power_kind', '-'):>10} "
                         f"{_num(g.get('energy_mj'), '11.1f', 1e-3)} {_num(g.get('util_gpu_pct'), '5.0f')} {mem:>15} "
                         f"{_num(g.get('temp_c'), '4.0f')} {_num(g.get('sm_clock_mhz'), '6.0f')} "
                         f"{g.get('pstate', '-'):>3}  {name}")
        if not self.gpus:
            lines.append("  (no tel.gpu messages)")
        h = self.host
        if h is not None:
            lines.append(f"host cpu {_num(h.get('cpu_pct'), '5.1f')}%  mem {_num(h.get('mem_used_mib'), '.0f')}/"
                         f"{_num(h.get('mem_total_mib'), '.0f')} MiB  swap {_num(h.get('swap_used_mib'), '.0f')} MiB")
            for zone, uj in sorted((h.get("rapl_uj") or {}).items()):
                lines.append(f"  rapl {zone}: {uj / 1e6:.1f} J")
            for name, p in sorted((h.get("procs") or {}).items()):
                lines.append(f"  proc {terminal_text(name)} pid {p.get('pid')}: cpu {_num(p.get('cpu_pct'), '.1f')}% "
                             f"rss {_num(p.get('rss_mib'), '.0f')} MiB")
        if self.hb is not None:
            parts = []
            for name, s in sorted((self.hb.get("sources") or {}).items()):
                parts.append(f"{name} {_num(s.get('achieved_hz'), '.1f')}/{_num(s.get('target_hz'), 'g')} Hz "
                             f"p99 {_num(s.get('jitter_ms_p99'), '.2f')} ms drop {s.get('dropped_ticks', '-')}"
                             + (" BELOW TARGET RATE" if s.get("rate_low") else ""))
            sim = "  SIMULATED GPU" if self.hb.get("simulated") else ""
            lines.append(f"hb: {'; '.join(parts)}{sim}")
        lines.append(f"messages {self.messages}, seq gaps {self.seq_gaps}")
        return "\n".join(lines)


WAITING_REMIND_S = 10.0  # while nothing arrived: the waiting line again this often


def waiting_line(endpoints: list[str], requests: bool, waited_s: float = 0.0) -> str:
    """What tail says before the first message (never a blank screen): where it listens and what starts it."""
    what, start = (("batch events", "a running batch (python -m collector ...) or the measuring proxy "
                                    "(python -m collector.proxy ...)") if requests else
                   ("telemetry", "the daemon (python -m telemetry)"))
    since = f", nothing for {waited_s:.0f} s" if waited_s else ""
    return f"waiting for {what} on {', '.join(endpoints)} …{since} (needs {start}; Ctrl-C stops)"


def _analysis_endpoint() -> str:
    return analysis_endpoint()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m telemetry.tail", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print every message as one JSON line")
    ap.add_argument("--count", type=int, default=None, metavar="N", help="stop after N messages")
    ap.add_argument("--refresh-s", type=float, default=0.5, help="table refresh period (default 0.5 s)")
    ap.add_argument("--requests", action="store_true",
                    help="follow a batch or the measuring proxy instead: subscribe to the collector's events "
                         "endpoint (default: GENAI_EVENTS_ENDPOINT or tcp://127.0.0.1:5557) and the live analyzer's "
                         f"rows (GENAI_ANALYSIS_ENDPOINT or {ANALYSIS_ENDPOINT}); a line per request event and "
                         "running totals per model (requests, tokens, joules)")
    add_subscriber_args(ap, ["tel."], "topic prefixes (default: tel.; with --requests: req. batch.)")
    args = ap.parse_args(argv)
    if args.requests:
        args.endpoint = args.endpoint or [events_endpoint(), _analysis_endpoint()]
        if args.topics == ["tel."]:
            args.topics = ["req.", "batch.", ANA_ROW]
    totals = ModelTotals()
    interactive = sys.stdout.isatty()
    state = TailState()
    not_streamed = NotStreamed()
    end = timebase.now_s() + args.duration if args.duration else None
    next_draw = timebase.now_s()
    with subscriptions(args) as (subs, stop, endpoints):
        log.info("tail_start", endpoints=endpoints, topics=args.topics)
        started = timebase.now_s()
        # on stderr: --json keeps stdout to JSON lines only
        print(waiting_line(endpoints, args.requests), file=sys.stderr, flush=True)
        remind = started + WAITING_REMIND_S
        try:
            while not stop.is_set() and (args.count is None or state.messages < args.count):
                now = timebase.now_s()
                if end is not None and now >= end:
                    break
                if not state.messages and now >= remind:
                    print(waiting_line(endpoints, args.requests, now - started), file=sys.stderr, flush=True)
                    remind = now + WAITING_REMIND_S
                for msg in (m for _, batch in subs.poll(100) for m in batch):
                    state.update(*msg)
                    if args.json:
                        print(to_json_line(*msg), flush=True)
                    elif args.requests and (line := request_line(*msg, not_streamed.update(*msg))) is not None:
                        model = totals.update(*msg)
                        print(line + ("\n" + totals.line(model) if model is not None else ""), flush=True)
                    if args.count is not None and state.messages >= args.count:
                        break
                if not (args.json or args.requests) and timebase.now_s() >= next_draw and state.messages:
                    # ANSI clear-and-home on a terminal (Windows 10+ consoles understand it too).
                    print(("\x1b[H\x1b[J" if interactive else "\n") + state.render(), flush=True)
                    next_draw = timebase.now_s() + args.refresh_s
            if not (args.json or args.requests) and state.messages:
                print(state.render(), flush=True)
        except BrokenPipeError:
            pass  # `| head` closed the pipe: not an error
    return 0


if __name__ == "__main__":
    sys.exit(main())
