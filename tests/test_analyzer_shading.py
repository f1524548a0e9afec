"""The request windows' shading on the power timelines (analyzer.shading): each window's spans while
they are few, merged within a pixel when a long recording has tens of thousands, in report.html's SVG
and in the PNG plots."""
from __future__ import annotations

import re

import numpy as np
import pytest

from analyzer import energy as E
from analyzer import pipeline, plots, report_html, shading


def _windows(n: int, seed: int = 3, gap: float = 1.0) -> list[dict]:
    """Windows in time order: some without a first token, some with it outside, warm-ups among them."""
    rng = np.random.default_rng(seed)
    out, t = [], 0.0
    for i in range(n):
        a = t + gap * rng.random()
        b = a + 3 * rng.random()
        f = [None, a + (b - a) * rng.random(), b + 1.0, a][i % 4]
        out.append({"rid": f"r{i}", "a_s": a, "b_s": b, "label": f"m<{i % 3}>/t/1#{i}", "warmup": i % 7 == 0,
                    "first_s": f})
        t = b
    return out


def _reference(w: dict) -> list[tuple[float, float, str]]:
    """A window's spans by the rule report.html states: split at the first token where it falls inside."""
    a, b, f = w["a_s"], w["b_s"], w["first_s"]
    kind = "warm" if w["warmup"] else None
    if f is None or not a <= f <= b:
        return [(a, b, kind or "decode")]
    return [(a, f, kind or "prefill"), (f, b, kind or "decode")]


def test_spans_split_each_window_at_its_first_token():
    wins = _windows(200)
    sp = shading.spans(shading.window_arrays(wins))
    want = [(s0, s1, k, i) for i, w in enumerate(wins) for s0, s1, k in _reference(w)]
    got = list(zip(sp.s0.tolist(), sp.s1.tolist(), [shading.KINDS[k] for k in sp.kind.tolist()], sp.window.tolist()))
    assert got == want
    assert {k for _, _, k, _ in got} == {"prefill", "decode", "warm"} and sp.count.tolist() == [1] * len(want)


def test_merged_spans_cover_each_span_once_and_stay_a_pixel_apart():
    wins = _windows(5000, gap=40.0)
    sp = shading.spans(shading.window_arrays(wins))
    res = 25.0
    m = shading.merged(sp, res)
    assert 0 < len(m) < len(sp) and int(m.count.sum()) == len(sp)
    for k in range(len(shading.KINDS)):
        mine = m.kind == k
        s0, s1 = m.s0[mine], m.s1[mine]
        assert (np.diff(s0) > 0).all() and (s0[1:] > s1[:-1] + res).all()  # runs apart by more than a pixel
        orig = sp.kind == k
        # each span of this kind lies inside exactly one merged span, and the counts say how many
        at = np.searchsorted(s0, sp.s0[orig], side="right") - 1
        assert (at >= 0).all() and (sp.s1[orig] <= s1[at]).all()
        assert np.bincount(at, minlength=s0.size).tolist() == m.count[mine].tolist()
        # the windows' own length kept: a merged span's share of it they cover, never above 1
        np.testing.assert_allclose(m.busy[mine], np.bincount(at, weights=(sp.s1 - sp.s0)[orig], minlength=s0.size))
    share = m.share()
    assert ((share >= 0) & (share <= 1)).all() and (share[m.count > 1] < 1).any()  # (0: spans of no length)
    assert (sp.share() == 1).all()  # (a window's own span covers itself)


@pytest.mark.parametrize("of", [shading.spans, shading.whole])
def test_merging_a_block_of_windows_at_a_time_gives_the_spans_of_merging_all_at_once(monkeypatch, of):
    """A week's windows are shaded a block at a time (bounded memory): the same runs, starts, reaches,
    first windows and counts as one merge of every span, whatever order the windows come in (blocks that
    interleave in time, equal starts across blocks)."""
    wins = _windows(3000, gap=2.0)
    order = np.random.default_rng(5).permutation(len(wins))
    wins = [wins[i] for i in order]
    for i in range(0, len(wins), 50):  # starts equal to another block's
        wins[i] = {**wins[i], "a_s": wins[(i + 977) % len(wins)]["a_s"]}
        wins[i]["b_s"] = max(wins[i]["b_s"], wins[i]["a_s"])
    arrays = shading.window_arrays(wins)
    x0, x1, pixels = float(arrays.a_s.min()), float(arrays.b_s.max()), 700
    whole_merge = shading.merged(of(arrays), (x1 - x0) / pixels)
    monkeypatch.setattr(shading, "BLOCK", 97)
    calls = []  # (the caller's hand-back of the pages read, once a block)
    blocked = shading.shading(arrays, x0, x1, pixels, of=of, after_block=lambda: calls.append(1))
    assert len(calls) == -(-len(wins) // 97)
    assert 0 < len(blocked) < len(of(arrays))
    for name in ("s0", "s1", "kind", "window", "count"):
        assert getattr(blocked, name).tolist() == getattr(whole_merge, name).tolist(), name
    np.testing.assert_allclose(blocked.busy, whole_merge.busy, rtol=1e-12)
    monkeypatch.setattr(shading, "BLOCK", 10_000)  # one block: as before
    assert shading.shading(arrays, x0, x1, pixels, of=of).window.tolist() == whole_merge.window.tolist()


@pytest.mark.parametrize("block", [3, 1 << 16])
def test_pipeline_windows_give_the_arrays_their_dicts_hold(block, monkeypatch):
    """pipeline.Windows hands the shading its arrays without a dict per window, the same values (the
    first tokens' times made a block of windows at a time)."""
    monkeypatch.setattr(pipeline, "_WINDOW_BLOCK", block)
    a = np.array([0.5, 2.0, 4.0, 7.5])
    b = np.array([1.5, 3.0, 6.0, 9.0])
    first = np.array([0.25, np.nan, 0.5, 3.0])
    rows = [{"model": "m", "task": "t", "load": 1, "run": i} for i in range(4)]
    wins = pipeline.Windows([f"r{i}" for i in range(4)], np.array([True, False, False, False]), rows,
                            E.Window(a, b), first)
    own = wins.arrays()
    from_dicts = shading.window_arrays([wins[i] for i in range(len(wins))])
    for x, y in zip(own, from_dicts):
        np.testing.assert_array_equal(x, y)
    assert own.first_s[1] != own.first_s[1] and own.warmup.tolist() == [True, False, False, False]


def _timeline(wins: list[dict]) -> dict:
    end = wins[-1]["b_s"] + 2
    ts = np.linspace(-1.0, end, 4000)
    return {"t_s": ts, "power_w": 200 + 100 * np.abs(np.sin(ts / 50))}


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_timeline_svg_draws_each_window_while_few_and_merges_many(lang):
    few = _windows(300)
    svg = report_html.timeline_svg("t", _timeline(few), few, lang)
    shaded = re.findall(r'<rect class="mark win (\w+)"[^>]*data-tip="([^"]*)"', svg)
    assert len(shaded) == sum(len(_reference(w)) for w in few)
    assert "m&lt;1&gt;/t/1#1" in shaded[1][1]  # (the label escaped)

    many = _windows(30_000, gap=30.0)
    svg = report_html.timeline_svg("t", _timeline(many), many, lang)
    shaded = re.findall(r'<rect class="mark win (\w+)"[^>]*data-tip="([^"]*)"', svg)
    # at most a rectangle per pixel and kind, far fewer than the windows' 52,000 spans
    assert 0 < len(shaded) <= 3 * report_html.TIMELINE_W
    counts = [int(m.group(1)) for _, tip in shaded if (m := re.match(r"(\d+)", tip))]
    # a merged span is as light as the share of it its windows cover (these leave gaps): never a solid bar
    fades = [float(f) for f in re.findall(r'<rect class="mark win \w+"[^>]*fill-opacity="([0-9.]+)"', svg)]
    assert len(fades) == len(counts) and all(0 < f < 1 for f in fades)
    assert all(re.search(r"\d %", tip) for _, tip in shaded if re.match(r"\d+", tip))
    merged_kinds = {k for k, tip in shaded if re.match(r"\d+", tip)}
    assert counts and merged_kinds <= {"prefill", "decode", "warm"}
    singles = sum(1 for _, tip in shaded if not re.match(r"\d+", tip))
    assert sum(counts) + singles == len(shading.spans(shading.window_arrays(many)))


def test_png_timeline_merges_many_windows():
    few = _windows(100)
    t = _timeline(few)["t_s"]
    assert plots.merged_windows(few, t, 1200) is None  # each drawn (and labelled while few)
    many = _windows(20_000, gap=20.0)
    t = _timeline(many)["t_s"]
    drawn = plots.merged_windows(many, t, 1200)
    assert drawn is not None and 0 < len(drawn) <= 2 * 1200
    assert {c for _, _, c, _ in drawn} == {"tab:gray", "tab:orange"}  # warm-ups apart
    assert all(0 < alpha <= plots.WINDOW_ALPHA for _, _, _, alpha in drawn)
    assert min(alpha for _, _, _, alpha in drawn) < plots.WINDOW_ALPHA  # (gaps between the windows: lighter)
    ends = np.array([[s0, s1] for s0, s1, _, _ in drawn])
    a = np.array([w["a_s"] for w in many])
    b = np.array([w["b_s"] for w in many])
    assert ends[:, 0].min() == a.min() and ends[:, 1].max() == b.max()
    # every window inside a drawn span
    inside = ((ends[None, :, 0] <= a[:, None]) & (b[:, None] <= ends[None, :, 1])).any(axis=1)
    assert inside.all()
