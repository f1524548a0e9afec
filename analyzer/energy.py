"""Per-window energy and gauges for one GPU and for the host (pure; arrays in, column arrays out).

Windows are given as (a_s, b_s): seconds from the batch origin on the monotonic clock.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from analyzer.integrate import Trace, common_uncertainty, counter_energy, edge_uncertainty_fn, fit_refreshes
from analyzer.stream import Series
from analyzer.windows import (coverage, gaps_touching, seq_gap_intervals, split_subs, split_windows, window_mean,
                              window_peak)

DEFAULT_CPU_TDP_W = 65.0
# A power reading refreshed at most this far apart is a held instant reading, re-timed to its refreshes.
HOLD_MAX_S = 0.25
HELD_CHANGE_SHARE = 0.2  # ... and it changes on at least this share of samples (a hold of up to 5 samples)
# Other processes above this share of all cores during a window: the report warns of contention.
CONTENTION_OTHER_PCT = 25.0
# A window shorter than this many refresh periods may hold fewer than two whole refresh intervals
# (whatever its phase, it holds floor(L/period) − 1 of them): its counter part is mostly edges.
SHORT_WINDOW_REFRESHES = 3.0


@dataclass(frozen=True)
class Window:
    a_s: np.ndarray
    b_s: np.ndarray


def seconds(series: Series, origin_ns: int) -> np.ndarray:
    return (series.t_ns - origin_ns).astype(np.float64) / 1e9


def _clipped(fn, lo: float, hi: float):
    return lambda x: fn(np.clip(x, lo, hi))


def _nan_where(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.where(mask, np.nan, values)


def samples_inside(t_s: np.ndarray, w: Window) -> np.ndarray:
    """How many samples fall inside each window [a, b]."""
    return (np.searchsorted(t_s, w.b_s, side="right") - np.searchsorted(t_s, w.a_s, side="left")).astype(np.int64)


def series_coverage(series: Series, t_s: np.ndarray, src_seqs: np.ndarray, w: Window,
                    spacing_s: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(coverage fraction, gaps touching each window, samples inside each window); ``spacing_s``: the
    samples' median spacing when the caller has it.

    A window with no sample inside it has coverage 0: interpolating between samples taken
    outside the window would be a guess, not a measurement.
    """
    g0, g1, _ = seq_gap_intervals(t_s, series.seq, src_seqs, spacing_s)
    span = (float(t_s[0]), float(t_s[-1])) if t_s.size else (np.nan, np.nan)
    inside = samples_inside(t_s, w)
    cov = np.where(inside > 0, coverage(span, g0, g1, w.a_s, w.b_s), 0.0)
    return cov, gaps_touching(g0, g1, w.a_s, w.b_s), inside


def power_trace(t_s: np.ndarray, power_w: np.ndarray) -> tuple[Trace, float]:
    """``power_trace_of`` the readings' trace."""
    return power_trace_of(Trace.build(t_s, power_w))


def power_trace_of(raw: Trace) -> tuple[Trace, float]:
    """The power trace used for shape, and how late it may show a change (s).

    A reading the GPU holds between its own refreshes (e.g. 20 ms on some boards, seen as the same
    value on several samples) describes the instant it refreshed, not the sample time: when those
    refreshes fit a period, the trace is re-timed to them and the delay is the fit's error bound;
    otherwise the delay is the hold plus the sample spacing."""
    if raw.n < 2:
        return raw, float("nan")
    dt = raw.spacing_s
    fit = fit_refreshes(raw.t_s, raw.y, dt)
    # Held: it changes at (nearly) every refresh of its own, a few samples apart. A reading that is
    # merely steady (no noise, constant load) changes rarely and must not be re-timed.
    held = (fit.method not in ("fresh", "none") and np.isfinite(fit.period_s) and 1.5 * dt < fit.period_s <= HOLD_MAX_S
            and fit.r_s.size >= HELD_CHANGE_SHARE * (raw.n - 1))
    if held and fit.method != "midpoint" and fit.r_s.size >= 2:
        # first reading at its sample time, then every change at its refresh instant
        t_new = np.concatenate([raw.t_s[:1], fit.r_s, raw.t_s[-1:]])
        y_new = np.concatenate([raw.y[:1], fit.y, fit.y[-1:]])
        keep = np.concatenate([[True], np.diff(t_new) > 0])
        # segments that did not fit keep their midpoints (error up to half a sample interval)
        return Trace.build(t_new[keep], y_new[keep]), float(np.percentile(fit.err_s, 95))
    return raw, dt + (fit.period_s if held else 0.0)


def power_noise_w(tr: Trace) -> float:
    """Noise of a power trace (W): robust spread of the second differences of its points (a slope
    cancels out, and so do the rare steps of a clean reading); 0 for fewer than 4 points. Give it
    the re-timed trace of a held reading: repeated values would hide the noise."""
    y = tr.y
    if y.size < 4:
        return 0.0
    d2 = y[2:] - 2 * y[1:-1] + y[:-2]
    if (d2.size - np.count_nonzero(d2)) * 2 > d2.size and not np.isnan(d2).any():
        return 0.0  # most points on a line (a stepped reading): the median is 0, not sorted for
    return float(1.4826 * np.median(np.abs(d2)) / np.sqrt(6.0))


def gpu_columns(series: Series, origin_ns: int, src_seqs: np.ndarray, w: Window,
                idle_until_s: float | None = None, mid_s: np.ndarray | None = None,
                idle_w: float | None = None) -> dict[str, np.ndarray]:
    """Energy (J), method, uncertainty, coverage and gauges of one GPU for every window.

    ``mid_s``: per window, the first streamed chunk (NaN when none): energy is also split into
    prefill [a, mid] and decode [mid, b] by the window split rule. ``idle_w``: the idle power when
    the caller measured it (``idle_power_w``) on other samples than these (a later time slab)."""
    t_s = seconds(series, origin_ns)
    v = series.values
    n = w.a_s.size
    raw_power = Trace.build(t_s, v["power_mw"] / 1000.0)
    # the samples' median spacing, once: the power trace's own where it kept every sample
    spacing_t = raw_power.spacing_s if raw_power.n == t_s.size and t_s.size > 1 else None
    cov, gaps, inside = series_coverage(series, t_s, src_seqs, w, spacing_t)
    power, shape_s = power_trace_of(raw_power)
    has_power = power.n >= 2
    split_p = split_windows(_clipped(power.integral_at, *power.span()), w.a_s, w.b_s) if has_power else None
    counter = (counter_energy(t_s, v["energy_mj"], power if has_power else None, spacing_t)
               if np.isfinite(v["energy_mj"]).sum() >= 2 else None)
    use_counter = counter is not None and counter.usable
    if use_counter and "average_1s" in series.meta.get("power_kind", []) and counter.r_s.size >= 3:
        # A 1 s average has no shape at the counter's scale: take it from the counter's own
        # interval means (a line through them, at the interval midpoints).
        shape_tr = Trace.build(0.5 * (counter.r_s[1:] + counter.r_s[:-1]), counter.mean_w)
        counter = replace(counter, power=shape_tr)
        shape_s = 0.0  # a line through exact means: its error is the curvature term
    own_shape = use_counter and has_power and counter.power is power
    noise = power_noise_w(power) if own_shape else 0.0
    if own_shape:
        # instant power: the samples' shape, corrected by the counter's interval energies
        counter = counter.with_power_shape(noise, shape_s)
    split_c = split_windows(_clipped(counter.cumulative_at, *counter.span), w.a_s, w.b_s) if use_counter else None
    nan = np.full(n, np.nan)
    mid = np.full(n, np.nan) if mid_s is None else np.clip(np.asarray(mid_s, dtype=np.float64), w.a_s, w.b_s)
    sub = {"prefill": (w.a_s, mid), "decode": (mid, w.b_s)}  # a request's phases, as sub-windows
    phases: dict[str, np.ndarray] = {}
    if use_counter:
        energy = split_c.energy
        method = "counter+power" if has_power else "counter"
        effective = split_c.effective_s
        refresh_s = counter.period_s if np.isfinite(counter.period_s) else float(np.median(np.diff(counter.r_s)))
        short = (w.b_s - w.a_s) < SHORT_WINDOW_REFRESHES * refresh_s
        fit_method = counter.method
        shape = shape_s if counter.power is not None else refresh_s / 2  # no power: apportioned by time
        cum = _clipped(counter.cumulative_at, *counter.span)
        spacing = power.spacing_s if own_shape else None

        edge_at = edge_uncertainty_fn(counter, shape, t_s, noise, spacing)

        def unc_fn(x):
            return edge_at(np.clip(x, *counter.span))

        # the whole window's uncertainty and each phase's, at one set of breakpoints
        (_, uncertainty), *by_phase = split_subs(cum, w.a_s, w.b_s, [(w.a_s, w.b_s), *sub.values()], unc_fn)
        uncertainty = uncertainty + common_uncertainty(counter, w.a_s, w.b_s)
        for (phase, (c, d)), (e, u) in zip(sub.items(), by_phase):
            u = u + common_uncertainty(counter, np.where(np.isfinite(c), c, w.a_s), np.where(np.isfinite(d), d, w.b_s))
            phases[f"energy_{phase}_j"], phases[f"energy_{phase}_uncertainty_j"] = e, u
            phases[f"{phase}_short"] = np.where(np.isfinite(e), (d - c) < SHORT_WINDOW_REFRESHES * refresh_s, np.nan)
    elif has_power:
        energy, method, effective, short, refresh_s = split_p.energy, "power_trapezoid", split_p.effective_s, None, np.nan
        fit_method, uncertainty = None, nan
        cum = _clipped(power.integral_at, *power.span())
        for phase, (e, _) in zip(sub, split_subs(cum, w.a_s, w.b_s, list(sub.values()))):
            phases[f"energy_{phase}_j"] = e
            phases[f"energy_{phase}_uncertainty_j"], phases[f"{phase}_short"] = nan, nan
    else:
        energy, method, effective, short, refresh_s = nan, "none", nan, None, np.nan
        fit_method, uncertainty = None, nan
        for phase in ("prefill", "decode"):
            phases.update({f"energy_{phase}_j": nan, f"energy_{phase}_uncertainty_j": nan, f"{phase}_short": nan})
    no_data = cov <= 0
    energy = _nan_where(energy, no_data)
    e_power = _nan_where(split_p.energy, no_data) if has_power else nan
    e_counter = _nan_where(split_c.energy, no_data) if use_counter else nan
    uncertainty = _nan_where(uncertainty, no_data)
    phases = {k: _nan_where(np.asarray(x, dtype=np.float64), no_data) for k, x in phases.items()}
    # achieved sampling rate inside each window (samples − 1 over their span), else over the run
    ia = np.searchsorted(t_s, w.a_s, side="left")
    ib = np.searchsorted(t_s, w.b_s, side="right") - 1
    run_hz = (t_s.size - 1) / (t_s[-1] - t_s[0]) if t_s.size > 1 and t_s[-1] > t_s[0] else np.nan
    last = max(t_s.size - 1, 0)
    span = (np.where(ib > ia, t_s[np.clip(ib, 0, last)] - t_s[np.clip(ia, 0, last)], 0.0) if t_s.size
            else np.zeros(n))
    with np.errstate(invalid="ignore", divide="ignore"):
        hz = np.where(span > 0, (ib - ia) / span, run_hz)
    if idle_w is None:
        idle_w = _idle_w(raw_power, idle_until_s) if has_power else np.nan
    return {
        "energy_j": energy,
        "energy_method": np.array([method if not nd else "none" for nd in no_data], dtype=object),
        "energy_counter_j": e_counter,
        "energy_power_j": e_power,
        "energy_uncertainty_j": uncertainty,
        "short_window": np.array([None] * n if short is None else [bool(s) for s in short], dtype=object),
        "counter_refresh_s": np.full(n, refresh_s),
        "counter_refresh_fit": np.array([fit_method] * n, dtype=object),
        "sampling_hz": _nan_where(hz, no_data),
        **phases,
        "coverage": cov,
        "seq_gaps": gaps,
        "samples": inside,
        "idle_w": np.full(n, idle_w),
        "energy_net_j": energy - idle_w * effective if np.isfinite(idle_w) else nan,
        "effective_s": effective,
        "power_avg_w": window_mean(raw_power, w.a_s, w.b_s),
        "power_peak_w": window_peak(raw_power, w.a_s, w.b_s),
        "mem_peak_mib": window_peak(Trace.build(t_s, v["mem_used_mib"]), w.a_s, w.b_s),
        "util_avg_pct": window_mean(Trace.build(t_s, v["util_gpu_pct"]), w.a_s, w.b_s),
        "temp_peak_c": window_peak(Trace.build(t_s, v["temp_c"]), w.a_s, w.b_s),
        "sm_clock_avg_mhz": window_mean(Trace.build(t_s, v["sm_clock_mhz"]), w.a_s, w.b_s),
    }


def _idle_w(raw_power: Trace, idle_until_s: float | None) -> float:
    if idle_until_s is None or raw_power.n < 2 or not raw_power.t_s[0] < idle_until_s:
        return np.nan
    # Only samples taken before the first request: no interpolation towards its load.
    idle_end = float(raw_power.t_s[raw_power.t_s <= idle_until_s][-1])
    return float(window_mean(raw_power, [raw_power.t_s[0]], [idle_end])[0])


def idle_power_w(series: Series, origin_ns: int, idle_until_s: float | None) -> float:
    """Mean power (W) of the samples before ``idle_until_s`` (the first request), NaN without two."""
    return _idle_w(Trace.build(seconds(series, origin_ns), series.values["power_mw"] / 1000.0), idle_until_s)


def rapl_package_zones(zones: list[str]) -> list[str]:
    """RAPL zones to add up: the package (and psys) domains; core/uncore/dram are parts of them
    or separate rails, so with package zones present only those count. Else every zone."""
    top = [z for z in zones if z.lower().startswith(("package", "psys"))]
    return sorted(top) if top else sorted(zones)


def server_columns(host: Series, t_s: np.ndarray, w: Window, cpu_tdp_w: float, rapl_j: np.ndarray,
                   cov: np.ndarray) -> dict[str, np.ndarray]:
    """The LLM server's own CPU share (tel.host server_cpu_s, its process tree's cumulative CPU time).

    Per window (split between concurrent requests like every energy): the server's CPU seconds,
    all processes' CPU seconds (∫ cpu_pct/100 × cores), the server's share of them;
    cpu_energy_j_server = the host's CPU energy × share: RAPL when recorded, else the seed's TDP
    approximation (TDP × all CPU s / cores); the share is clipped to [0, 1]; host_cpu_other_pct = the
    other processes' CPU, % of all cores. A window that starts before the daemon first found the server's
    process (or ends after it last saw it) has no server figures and basis ``server_not_seen``: the CPU
    time the server spent outside the trace is unknown, never 0."""
    n = w.a_s.size
    nan = np.full(n, np.nan)
    out = {"server_cpu_s": nan, "cpu_server_share": nan, "cpu_energy_j_server": nan, "host_cpu_other_pct": nan,
           "cpu_server_basis": np.array([None] * n, dtype=object)}
    v = host.values
    cores = v.get("cpu_count")
    server = Trace.build(t_s, v["server_cpu_s"]) if "server_cpu_s" in v else None
    if server is None or server.n < 2 or cores is None or not np.isfinite(cores).any():
        return out
    n_cores = float(np.nanmedian(cores))
    busy = Trace.build(t_s, v["cpu_pct"] * n_cores / 100.0)  # cores busy
    lo, hi = server.span()
    unseen = (w.a_s < lo) | (w.b_s > hi)
    server_s = split_windows(lambda x: server.value_at(np.clip(x, lo, hi)), w.a_s, w.b_s).energy
    split_all = split_windows(_clipped(busy.integral_at, *busy.span()), w.a_s, w.b_s)
    all_s = split_all.energy
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.clip(np.where(all_s > 0, server_s / all_s, np.nan), 0.0, 1.0)
        other = 100.0 * np.clip(all_s - server_s, 0.0, None) / (split_all.effective_s * n_cores)
    use_rapl = np.isfinite(rapl_j)
    # the host's energy (RAPL, else the seed's TDP approximation) times the server's share: the two
    # clocks of the samples (host cpu_pct vs the process's CPU time) never put the server above the host
    energy = np.where(use_rapl, rapl_j, cpu_tdp_w * all_s / n_cores) * share
    no = (cov <= 0) | unseen
    out.update(server_cpu_s=_nan_where(server_s, no), cpu_server_share=_nan_where(share, no),
               cpu_energy_j_server=_nan_where(energy, no), host_cpu_other_pct=_nan_where(other, no),
               cpu_server_basis=np.array([("server_not_seen" if u else None) if nd else ("rapl_share" if r else "tdp_share")
                                          for nd, u, r in zip(no, unseen & (cov > 0), use_rapl)], dtype=object))
    return out


def host_columns(host: Series | None, procs: dict[str, Series], rapl: dict[str, Series], origin_ns: int,
                 src_seqs: dict, w: Window, cpu_tdp_w: float) -> dict[str, np.ndarray]:
    """CPU utilisation/energy (TDP approximation and RAPL), host memory and watched processes."""
    n = w.a_s.size
    nan = np.full(n, np.nan)
    out: dict[str, np.ndarray] = {}
    if host is None or host.t_ns.size == 0:
        out.update(cpu_util_avg=nan, cpu_energy_j_approx=nan, cpu_coverage=np.zeros(n), host_mem_peak_mib=nan,
                   cpu_energy_j_rapl=nan)
        return out
    t_s = seconds(host, origin_ns)
    cov, _, _ = series_coverage(host, t_s, src_seqs.get(host.src, np.zeros(0, dtype=np.int64)), w)
    cpu = Trace.build(t_s, host.values["cpu_pct"])
    cpu_w = Trace.build(t_s, host.values["cpu_pct"] * (cpu_tdp_w / 100.0))
    approx = (split_windows(_clipped(cpu_w.integral_at, *cpu_w.span()), w.a_s, w.b_s).energy
              if cpu_w.n >= 2 else nan)
    out["cpu_util_avg"] = window_mean(cpu, w.a_s, w.b_s)
    out["cpu_energy_j_approx"] = _nan_where(approx, cov <= 0)
    out["cpu_coverage"] = cov
    out["host_mem_peak_mib"] = window_peak(Trace.build(t_s, host.values["mem_used_mib"]), w.a_s, w.b_s)
    rapl_total = None
    for zone in rapl_package_zones(list(rapl)):
        zs = rapl[zone]
        tr = Trace.build(seconds(zs, origin_ns), zs.values["energy_uj"] / 1e6)
        if tr.n < 2:
            continue
        lo, hi = tr.span()
        e = split_windows(lambda x, tr=tr, lo=lo, hi=hi: tr.value_at(np.clip(x, lo, hi)), w.a_s, w.b_s).energy
        rapl_total = e if rapl_total is None else rapl_total + e
    out["cpu_energy_j_rapl"] = _nan_where(rapl_total, cov <= 0) if rapl_total is not None else nan
    out.update(server_columns(host, t_s, w, cpu_tdp_w, out["cpu_energy_j_rapl"], cov))
    for name, ps in sorted(procs.items()):
        pt = seconds(ps, origin_ns)
        out[f"proc_{name}_cpu_avg_pct"] = window_mean(Trace.build(pt, ps.values["cpu_pct"]), w.a_s, w.b_s)
        out[f"proc_{name}_rss_peak_mib"] = window_peak(Trace.build(pt, ps.values["rss_mib"]), w.a_s, w.b_s)
    return out
