"""Map each telemetry source's clock into the collector's, from the recording's clock.sync probes (pure).

A probe gives the source's clock ``remote_ns`` between the collector's ``sent_ns`` and ``received_ns``:
the collector's clock at that instant is the midpoint to ± rtt/2. Per source, the probes with the
shortest round trips (queueing only ever lengthens one) are fitted by weighted least squares:

    collector_t = remote_t + offset + drift × (remote_t − r0)

(offset and drift; the offset alone when the probes span under a second). The mapping's uncertainty
is the median half round trip of the probes used plus the fit's RMS residual. Sources on the
collector's host (equal boot ids) share its clock: no mapping, uncertainty 0, method ``same_host``.
A batch whose uncertainty exceeds MAX_UNCERTAINTY_MS (800 ms, the limit MLPerf Power uses) is refused.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from analyzer.i18n import Msg
from shared import messages as M

MAX_UNCERTAINTY_MS = 800.0
SHORT_WINDOW_FACTOR = 4.0   # a window shorter than this many uncertainties is flagged (clock_short_window)
MIN_DRIFT_SPAN_S = 1.0      # probes spanning less than this fit the offset alone
RTT_KEEP_FACTOR = 2.0       # probes up to this many times the shortest round trip (+1 ms) are used
TELEMETRY_TOPICS = (M.TEL_GPU, M.TEL_HOST, M.TEL_HB)


@dataclass
class Mapping:
    source: str
    method: str                 # same_host | offset+drift | offset
    offset_ns: int = 0          # collector clock − source clock at r0
    drift: float = 0.0          # d(offset)/d(source time), dimensionless (1e-6 = 1 ppm)
    r0: int = 0
    uncertainty_ms: float = 0.0
    probes: int = 0
    rtt_ms_min: float | None = None

    @property
    def identity(self) -> bool:
        return self.method == "same_host"

    def to_collector(self, t: int) -> int:
        if self.identity:
            return t
        return t + self.offset_ns + int(round(self.drift * (t - self.r0)))

    def to_source(self, t: float) -> float:
        """``to_collector``'s inverse: the source's clock at collector time t (a float, the rounding
        not undone: within a nanosecond or so of the stamp that maps to t); ±inf stay."""
        if self.identity or not math.isfinite(t):
            return t
        return self.r0 + (t - self.offset_ns - self.r0) / (1.0 + self.drift)

    def describe(self) -> str:
        if self.identity:
            return Msg("n_clock_same_host", src=self.source)
        return Msg("n_clock_mapped", src=self.source, method=self.method, offset=f"{-self.offset_ns / 1e6:+.3f}",
                   drift=f"{-self.drift * 1e6:+.2f}", unc=f"{self.uncertainty_ms:.3f}", probes=self.probes,
                   rtt=f"{self.rtt_ms_min:.3f}")


def fit(messages: list[tuple[str, dict[str, Any]]]) -> dict[str, Mapping]:
    """Source publisher id → Mapping, from every clock.sync in the messages."""
    per: dict[str, list[M.ClockSync]] = {}
    for topic, p in messages:
        if topic == M.CLOCK_SYNC:
            s = M.ClockSync.from_msg(p)
            if s.received_ns >= s.sent_ns:
                per.setdefault(s.source, []).append(s)
    return {src: fit_source(src, syncs) for src, syncs in sorted(per.items())}


def fit_source(source: str, syncs: list[M.ClockSync]) -> Mapping:
    if any(s.same_host for s in syncs):
        return Mapping(source, "same_host", probes=len(syncs), rtt_ms_min=min(s.rtt_ns or 0 for s in syncs) / 1e6)
    r = np.array([s.remote_ns for s in syncs], dtype=np.int64)
    mid = np.array([(s.sent_ns + s.received_ns) // 2 for s in syncs], dtype=np.int64)
    half = np.array([(s.received_ns - s.sent_ns) / 2 for s in syncs], dtype=float)
    keep = half <= RTT_KEEP_FACTOR * half.min() + 0.5e6
    r, mid, half = r[keep], mid[keep], half[keep]
    r0 = int(r[0])
    x = (r - r0).astype(float)                     # source time since the first probe, ns
    y = (mid - r).astype(float)                    # collector − source, ns (exact in float64 at these sizes)
    w = 1.0 / np.maximum(half, 1e4) ** 2           # 10 µs floor: loopback round trips are not that exact
    if x.size >= 2 and (x.max() - x.min()) >= MIN_DRIFT_SPAN_S * 1e9:
        sw, swx, swy = w.sum(), (w * x).sum(), (w * y).sum()
        swxx, swxy = (w * x * x).sum(), (w * x * y).sum()
        drift = (sw * swxy - swx * swy) / (sw * swxx - swx * swx)
        offset = (swy - drift * swx) / sw
        method = "offset+drift"
    else:
        drift, offset = 0.0, float((w * y).sum() / w.sum())
        method = "offset"
    resid = y - (offset + drift * x)
    rms = math.sqrt(float((resid ** 2).mean())) if resid.size else 0.0
    u_ns = float(np.median(half)) + rms
    return Mapping(source, method, int(round(offset)), float(drift), r0, u_ns / 1e6, int(keep.sum()),
                   float(half.min() * 2 / 1e6))


def apply(messages: list[tuple[str, dict[str, Any]]], mappings: dict[str, Mapping]) -> list[tuple[str, dict[str, Any]]]:
    """Telemetry stamped on a mapped source's clock restamped on the collector's, then sorted again."""
    moving = {src: m for src, m in mappings.items() if not m.identity}
    if not moving:
        return messages
    out = []
    for topic, p in messages:
        m = moving.get(str(p.get("src"))) if topic in TELEMETRY_TOPICS else None
        if m is not None:
            p = {**p, "t": m.to_collector(p["t"])}
        out.append((topic, p))
    out.sort(key=lambda x: (x[1]["t"], str(x[1]["src"]), x[1]["seq"]))
    return out


def refused(mappings: dict[str, Mapping]) -> list[str]:
    """One line per source whose mapping is too uncertain to join windows on (the batch is refused)."""
    return [f"{m.source}: clock mapping uncertainty {m.uncertainty_ms:.1f} ms exceeds {MAX_UNCERTAINTY_MS:.0f} ms "
            f"(shortest probe round trip {m.rtt_ms_min:.1f} ms); request windows cannot be joined with its samples. "
            "Fix: run the collector on a network path with shorter round trips to that GPU host (or on it)"
            for m in mappings.values() if m.uncertainty_ms > MAX_UNCERTAINTY_MS]


def unprobed(messages: list[tuple[str, dict[str, Any]]], mappings: dict[str, Mapping]) -> list[str]:
    """Telemetry sources without any clock.sync in a recording that has some (an older daemon without a
    clock endpoint): their clock is taken as the collector's, true only on the same host."""
    return unprobed_notes(sorted({str(p.get("src")) for t, p in messages if t in (M.TEL_GPU, M.TEL_HOST)}), mappings)


def unprobed_notes(tel_srcs: list[str], mappings: dict[str, Mapping]) -> list[str]:
    """``unprobed`` given the telemetry sources in scope."""
    if not mappings:
        return []
    srcs = sorted(set(tel_srcs) - set(mappings))
    return [Msg("p_clock_unprobed", src=s) for s in srcs]
