"""What the live page shows, as plain data (pure: no sockets, no threads).

Fed from the live analyzer's receive loop (every bus message, every analysed row, each batch's
analysis); read as a ``snapshot()`` (a viewer that connects gets the current state, not the history)
and as ``tick()`` deltas (new power and CPU points, the requests in flight, totals, progress). Memory
is bounded by time and count: power/CPU points of the last ``window_s`` seconds at ``point_hz``, the
last ``max_rows`` finished rows, the last ``max_problems`` problems.

Every text that came from a model, a server or a user (model names, errors, task names) is made
displayable here with the reports' rule (``shared.escape.terminal_text``: control and bidi characters
as visible escapes); the page sets it as text, never as markup. Numbers are formatted here with the
reports' ``fmt_num`` so the page reads like report.html.
"""
from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from analyzer.report import fmt_num
from shared import messages as M
from shared.escape import terminal_text
from shared.numbers import finite

# columns of a finished request on the page (results.csv names), in order
ROW_COLUMNS = ("model", "task", "status", "gpu_energy_j", "j_per_token", "first_token_s", "toks_per_s",
               "output_tokens", "total_energy_j", "quality_score", "quality_basis", "gpu_simulated")
SILENT_S = 3.0  # a batch running with no telemetry for this long is a problem shown on the page
MAX_TEXT = 300  # characters of an error, a name or an answer shown (the full texts are in the batch's files)
# the tel.* keys on_message reads by name, checked against the declarations at import (a key renamed in
# shared/messages.py fails here, not as a silently empty chart)
M.TelGpu.declared("gpu", "uuid", "name", "simulated", "power_kind", "power_mw")
M.TelHost.declared("cpu_pct")


_BREAKS_RE = re.compile(r"[\t\n\r]+")  # line breaks and tabs in an answer excerpt


def text(v: Any) -> str:
    s = terminal_text(v)
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + "…"


def cell(v: Any) -> str:
    """A value as the report shows it: numbers readable (no exponent), text escaped."""
    if v is None or isinstance(v, (bool, int, float)):
        return fmt_num(v)
    return text(v)


@dataclass
class _Series:
    label: str
    host: str
    uuid: str
    name: str
    simulated: bool = False
    points: deque = field(default_factory=deque)   # (wall s, value)
    new: list = field(default_factory=list)        # points since the last tick
    bucket: float | None = None
    acc: list = field(default_factory=list)


class LiveState:
    def __init__(self, window_s: float = 300.0, point_hz: float = 4.0, max_rows: int = 1000,
                 max_problems: int = 50, max_in_flight: int = 500):
        self.window_s = window_s
        self.step_s = 1.0 / point_hz
        self.max_rows = max_rows
        self.max_in_flight = max_in_flight
        self.gpus: dict[str, _Series] = {}
        self.cpu: dict[str, _Series] = {}
        self.in_flight: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.rows: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self.totals: dict[str, dict[str, float]] = {}
        self._contrib: dict[str, tuple[str, float, float, float]] = {}  # rid -> (model, tokens, gpu J, total J)
        self.batch: dict[str, Any] = {}
        self.problems: deque[str] = deque(maxlen=max_problems)
        self.telemetry_gaps: dict[str, tuple[int, int]] = {}  # src -> (last seq, lost)
        self.newest_wall_s = 0.0
        self.telemetry_wall_s = 0.0  # newest wall clock of any tel.* message
        self.rows_seen = 0
        self._answers: OrderedDict[str, str] = OrderedDict()  # rid -> the answer's start, until its row comes

    # -- feeding ---------------------------------------------------------------------------------
    def on_message(self, topic: str, p: dict[str, Any]) -> None:
        wall_s = (p.get("wall") or 0) / 1e9
        self.newest_wall_s = max(self.newest_wall_s, wall_s)
        if topic.startswith("tel."):
            self._gap(p)
            self.telemetry_wall_s = max(self.telemetry_wall_s, wall_s)
        if topic == M.TEL_GPU:
            host = M.src_host(p.get("src")) or "?"
            uuid = str(p.get("uuid") or f"gpu{p.get('gpu')}")
            key = f"{host}/{uuid}"
            s = self.gpus.get(key)
            if s is None:
                s = self.gpus[key] = _Series(text(f"{host} / {uuid}"), text(host), text(uuid), text(p.get("name") or ""))
            s.simulated = s.simulated or bool(p.get("simulated")) or p.get("power_kind") == "sim"
            w = finite(p.get("power_mw"))
            if w is not None:
                self._add(s, wall_s, w / 1000.0)
        elif topic == M.TEL_HOST:
            host = M.src_host(p.get("src")) or "?"
            s = self.cpu.get(host)
            if s is None:
                s = self.cpu[host] = _Series(text(host), text(host), "", "")
            v = finite(p.get("cpu_pct"))
            if v is not None:
                self._add(s, wall_s, v)
        elif topic == M.BATCH_START:
            self._new_batch(p)
        elif topic == M.BATCH_END:
            self.batch.update(ended=True, interrupted=bool(p.get("interrupted")))
            for rid in list(self.in_flight):  # a request never ended: the batch's analysis calls it incomplete
                del self.in_flight[rid]
        elif topic == M.REQ_START and p.get("rid") is not None and not p.get("warmup"):
            self.in_flight[str(p["rid"])] = {"rid": text(p["rid"]), "model": text(p.get("model")),
                                             "task": text(p.get("task")), "start_wall_s": wall_s, "first_s": None,
                                             "tokens": None, "basis": None}
            while len(self.in_flight) > self.max_in_flight:
                self.in_flight.popitem(last=False)
            self.batch["started"] = self.batch.get("started", 0) + 1
        elif topic == M.REQ_FIRST_TOKEN:
            r = self.in_flight.get(str(p.get("rid")))
            if r is not None and p.get("kind") == "content":
                r["first_s"] = max(0.0, wall_s - r["start_wall_s"])
        elif topic == M.REQ_PROGRESS:  # throttled by its senders (≤ 2/s per request): live view only
            r = self.in_flight.get(str(p.get("rid")))
            n = p.get("tokens_so_far")
            if r is not None and isinstance(n, int) and not isinstance(n, bool):
                r["tokens"], r["basis"] = n, text(p.get("tokens_basis") or "")
        elif topic == M.REQ_END:
            r = self.in_flight.pop(str(p.get("rid")), None)
            if r is not None:
                # a one-line excerpt: line breaks read as spaces, not as "\n" escapes
                self._answers[str(p["rid"])] = text(_BREAKS_RE.sub(" ", str(p.get("text") or "")))
                while len(self._answers) > self.max_in_flight:
                    self._answers.popitem(last=False)
                key = "ok" if p.get("ok") else "failed"
                self.batch[key] = self.batch.get(key, 0) + 1
                if not p.get("ok"):
                    self.problem(f"{r['model']} / {r['task']}: {text(p.get('error') or p.get('error_kind'))}")

    def _new_batch(self, p: dict[str, Any]) -> None:
        if p.get("resumed") and self.batch.get("id") == p.get("batch"):
            return
        self.batch = {"id": text(p.get("batch")), "planned": p.get("planned"), "started": 0, "ok": 0, "failed": 0,
                      "ended": False, "interrupted": False}
        self.rows.clear()
        self.totals.clear()
        self._contrib.clear()
        self.problems.clear()
        for m in p.get("missing_models") or []:
            self.problem(f"model not on the server: {text(m)}")

    def _gap(self, p: dict[str, Any]) -> None:
        src, seq = str(p.get("src")), p.get("seq")
        if not isinstance(seq, int):
            return
        last, lost = self.telemetry_gaps.get(src, (None, 0))
        if last is not None and seq > last + 1:
            lost += seq - last - 1
        self.telemetry_gaps[src] = (seq, lost)

    def _add(self, s: _Series, wall_s: float, v: float) -> None:
        """Average into ``step_s`` buckets: the page draws a few points a second, not 100."""
        b = wall_s - (wall_s % self.step_s)
        if s.bucket is not None and b != s.bucket and s.acc:
            pt = (round(s.bucket + self.step_s / 2, 3), round(sum(s.acc) / len(s.acc), 3))
            s.points.append(pt)
            s.new.append(pt)
            s.acc = []
            while s.points and s.points[0][0] < pt[0] - self.window_s:
                s.points.popleft()
            del s.new[:-int(self.window_s / self.step_s)]
        s.bucket = b
        s.acc.append(v)

    def problem(self, line: str) -> None:
        if line not in self.problems:
            self.problems.append(line)

    def on_row(self, row: M.AnaRow) -> dict[str, Any]:
        """Store a finished request's row (an early one, or the final one replacing it); returns
        what the page gets for it."""
        r = row.row
        answer = self._answers.pop(row.rid, None)
        if answer is None and row.rid in self.rows:  # the final row: keep the answer the early one had
            answer = self.rows[row.rid].get("answer", "")
        out = {"rid": text(row.rid), "final": bool(row.final), "energy_ready": bool(row.energy_ready),
               "answer": answer or "",
               "reason": text(row.reason) if row.reason else "",
               "cells": {c: cell(r.get(c)) for c in ROW_COLUMNS},
               "values": {c: r.get(c) for c in ROW_COLUMNS
                          if isinstance(r.get(c), (int, float)) and not isinstance(r.get(c), bool)}}
        self.rows[row.rid] = out
        self.rows.move_to_end(row.rid)
        while len(self.rows) > self.max_rows:
            self.rows.popitem(last=False)
        self.rows_seen += 1
        model = str(r.get("model") or "?")
        old = self._contrib.pop(row.rid, None)
        if old is not None:
            t = self.totals[old[0]]
            t["requests"] -= 1
            t["tokens"] -= old[1]
            t["gpu_energy_j"] -= old[2]
            t["total_energy_j"] -= old[3]
        new = (model, finite(r.get("output_tokens")) or 0.0, finite(r.get("gpu_energy_j")) or 0.0,
               finite(r.get("total_energy_j")) or 0.0)
        self._contrib[row.rid] = new
        t = self.totals.setdefault(model, {"requests": 0, "tokens": 0.0, "gpu_energy_j": 0.0, "total_energy_j": 0.0})
        t["requests"] += 1
        t["tokens"] += new[1]
        t["gpu_energy_j"] += new[2]
        t["total_energy_j"] += new[3]
        return out

    def on_batch(self, problems: list[str]) -> None:
        for line in problems:
            self.problem(text(line))

    # -- reading ---------------------------------------------------------------------------------
    def _totals(self) -> list[dict[str, Any]]:
        out = []
        for model, t in sorted(self.totals.items()):
            if t["requests"] <= 0:
                continue
            jpt = t["gpu_energy_j"] / t["tokens"] if t["tokens"] and t["gpu_energy_j"] else None
            out.append({"model": text(model), "requests": fmt_num(int(t["requests"])), "tokens": fmt_num(int(t["tokens"])),
                        "gpu_energy_j": fmt_num(t["gpu_energy_j"]), "total_energy_j": fmt_num(t["total_energy_j"]),
                        "j_per_token": fmt_num(jpt)})
        return out

    def _in_flight(self, now_wall_s: float) -> list[dict[str, Any]]:
        return [{"rid": r["rid"], "model": r["model"], "task": r["task"],
                 "elapsed_s": fmt_num(max(0.0, now_wall_s - r["start_wall_s"])),
                 "first_token_s": fmt_num(r["first_s"]), "tokens_so_far": fmt_num(r["tokens"]),
                 "tokens_basis": r["basis"] or ""} for r in list(self.in_flight.values())[-100:]]

    def _problems(self, now_wall_s: float) -> list[str]:
        out = list(self.problems)
        running = self.batch.get("id") and not self.batch.get("ended")
        if running and now_wall_s - self.telemetry_wall_s > SILENT_S:
            out.append("no telemetry connected: rows come without energy (start `python -m telemetry`)"
                       if not self.telemetry_wall_s else
                       f"no telemetry for {now_wall_s - self.telemetry_wall_s:.0f} s: is the daemon still running?")
        for src, (_, lost) in sorted(self.telemetry_gaps.items()):
            if lost:
                out.append(f"{text(src)}: {lost} telemetry message(s) lost on the bus (sequence gaps)")
        return out

    def _series(self, d: dict[str, _Series], full: bool) -> list[dict[str, Any]]:
        out = []
        for key, s in sorted(d.items()):
            pts = list(s.points) if full else s.new
            last = s.points[-1][1] if s.points else None
            out.append({"key": text(key), "label": s.label, "name": s.name, "simulated": s.simulated,
                        "points": pts, "last": fmt_num(last)})
        return out

    def _common(self, now_wall_s: float) -> dict[str, Any]:
        return {"now": round(now_wall_s, 3), "in_flight": self._in_flight(now_wall_s), "totals": self._totals(),
                "batch": dict(self.batch), "problems": self._problems(now_wall_s),
                "simulated": any(s.simulated for s in self.gpus.values())}

    def snapshot(self, now_wall_s: float) -> dict[str, Any]:
        return {**self._common(now_wall_s), "window_s": self.window_s, "gpus": self._series(self.gpus, True),
                "cpu": self._series(self.cpu, True), "rows": list(self.rows.values())}

    def tick(self, now_wall_s: float) -> dict[str, Any]:
        out = {**self._common(now_wall_s), "gpus": self._series(self.gpus, False), "cpu": self._series(self.cpu, False)}
        for s in (*self.gpus.values(), *self.cpu.values()):
            s.new = []
        return out
