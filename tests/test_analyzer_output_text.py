"""The analyzer's fast writers give the text of the plain ones they replace: request JSON against
json.dumps, CSV cells against tables.cell, the per-request sample times against Python's round, the
HTML and Markdown report cells against their per-cell rules, and the linear run-to-run and outlier
figures against their quadratic definitions. Random values, the odd ones included (NaN, inf, -0.0,
numpy scalars, bytes, non-text keys, text that needs escaping)."""
from __future__ import annotations

import csv
import io
import json
import math
import random

import numpy as np
import pytest

from analyzer import outputs, pipeline, report, report_html, tables
from analyzer.i18n import cell_value
from shared.numbers import FiniteFloats, finite

R = random.Random(17)
ODD = [None, True, False, 0, -3, 2**70, 1.5, -0.0, 1e300, 1e-7, float("nan"), float("inf"), "x", 'é"\\\n\x00中\u202e',
       np.float64(2.5), np.float32(0.1), np.int64(7), np.bool_(True), b"by\xfftes", np.float64("nan"), 3.0]


def value(depth: int = 0):
    k = R.random()
    if depth > 3 or k < 0.4:
        return R.choice(ODD)
    if k < 0.65:
        n = R.choice([0, 1, 8, 9, 30])
        kind = R.random()
        if kind < 0.4:
            return [R.choice([1.0, 2, None, 0.1, 123456789.123, -0.0]) for _ in range(n)]
        if kind < 0.5:
            return [R.choice([1.0, float("nan"), None]) for _ in range(n)]
        if kind < 0.6:
            return tuple(R.choice([1.0, 2]) for _ in range(n))
        if kind < 0.7:
            return [R.choice([1.0, True]) for _ in range(n)]
        return [value(depth + 1) for _ in range(n)]
    keys = R.choice([["a", "b"], ["a", 1, "1"], [True, None, 2.5], ["é", "中文"], []])
    return {key: value(depth + 1) for key in keys}


def reference_json(obj) -> str:
    """The definition: json.dumps(indent=2) of jsonable(obj), then each long list of plain numbers on
    one line as json.dumps writes it."""
    flat = {}

    def walk(v):
        if isinstance(v, dict):
            return {str(k): walk(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)) and len(v) > 8 and set(map(type, v)) <= {float, int, type(None)}:
            try:
                text = json.dumps(v, allow_nan=False)
            except ValueError:
                return [outputs.jsonable(x) for x in v]
            key = f"\x00placeholder:{len(flat)}"
            flat[json.dumps(key)] = text
            return key
        if isinstance(v, (list, tuple)):
            return [walk(x) for x in v]
        return outputs.jsonable(v)

    text = json.dumps(walk(obj), ensure_ascii=False, indent=2, allow_nan=False)
    for key, v in flat.items():
        text = text.replace(key, v, 1)
    return text + "\n"


def test_json_text_is_the_indented_json_with_number_lists_on_one_line():
    for _ in range(5000):
        obj = {"top": value(), "x": value(), "samples": [R.random() * 300 for _ in range(20)]}
        assert outputs.json_text(obj) == reference_json(obj)
    # a reading held (one value repeated) is written once and copied: still json's text, with the
    # values equal to it but written apart (-0.0 and 0.0, 2 and 2.0) and those json refuses
    nan = float("nan")
    for held in ([125.0] * 9, [0.0] * 9, [0.0] * 8 + [-0.0], [2.0] * 8 + [2], [2] + [2.0] * 8, [1e300] * 12,
                 [nan] * 9, [float("inf")] * 9, [-7.25] * 30 + [None], [0.1] * 8 + [0.1 + 1e-17]):
        assert outputs.json_text({"p": held}) == reference_json({"p": held})
    # lists of numbers alone (written by their repr): ints, floats and both, in lists and tuples
    for numbers in ([2**70, -3, 0] * 3, [1.5, 2, -0.0] * 3, (1.5, 2.0, 1e300) * 3, [1.5, 2, float("inf")] * 3,
                    (float("nan"),) * 9, [-1e-7, 5e-324, 1e16] * 3, tuple(range(9))):
        obj = {"n": numbers, "m": [numbers, list(numbers)]}
        assert outputs.json_text(obj) == reference_json(obj)
    assert outputs.json_text({"t_s": [0.0, 0.01] * 5}) == '{\n  "t_s": [0.0, 0.01, 0.0, 0.01, 0.0, 0.01, 0.0, 0.01, 0.0, 0.01]\n}\n'
    # a list equal to one written before has its text, but for the equal lists written apart
    ts = [0.5 + i / 100 for i in range(12)]
    for later in (list(ts), ts[:6] + [-0.0] + ts[7:], ts[:6] + [0.0] + ts[7:], ts[:6] + [6] + ts[7:],
                  ts[:6] + [True] + ts[7:], ts[:11] + [ts[11] + 1e-15], ts + [1.0]):
        for first in (ts, later[:6] + [0.0] + later[7:], later[:6] + [-0.0] + later[7:]):
            for obj in ({"a": first, "b": later}, {"a": [first, later], "b": {"c": later}}):
                assert outputs.json_text(obj) == reference_json(obj)
    for bad in ({"a": object()}, {"a": np.zeros(3)}, {"a": {1, 2}}):
        with pytest.raises(TypeError):
            outputs.json_text(bad)


def test_request_sample_lists_are_written_as_their_plain_lists():
    """A request's sample lists marked as finite floats (FiniteFloats: written without a check per
    value) are exactly those that hold finite floats only, and their text is the plain list's."""
    nan, inf = float("nan"), float("inf")
    arrays = [np.array(a) for a in ([125.0] * 12, [0.5 + i / 7 for i in range(12)], [1.0, nan] * 6, [inf] + [2.0] * 11,
                                    [3] * 12, [0.0] * 6 + [-0.0] * 6, [1.5] * 4)]
    for a in arrays:
        for scale in (None, 1000.0):
            got = pipeline._samples_list(a, scale)
            plain = pipeline._finite_list(a, scale)
            assert got == plain and list(map(repr, got)) == list(map(repr, plain))
            assert (type(got) is FiniteFloats) == all(type(x) is float and math.isfinite(x) for x in plain)
            assert outputs.json_text({"p": got, "q": [got]}) == reference_json({"p": plain, "q": [plain]})
        t_s = pipeline._samples_offsets(a, 0.25)
        assert list(map(repr, t_s)) == list(map(repr, pipeline._offsets(a, 0.25)))
        assert (type(t_s) is FiniteFloats) == all(math.isfinite(x) for x in t_s)
    parts = pipeline._each([arrays[0], arrays[1], arrays[5]], pipeline._samples_list)
    assert [type(p) for p in parts] == [FiniteFloats] * 3 and sum(parts, []) == np.concatenate([arrays[0], arrays[1], arrays[5]]).tolist()


def test_request_readings_are_each_gpus_plain_lists():
    """A request's reading lists, made for every GPU at once, are each GPU's _finite_list (power in W),
    whatever the GPUs hold: doubles, a NaN, integers, nothing in the window."""
    from analyzer.stream import Series

    rng = np.random.default_rng(5)
    columns = ("power_mw", "energy_mj", "util_gpu_pct", "mem_used_mib", "temp_c", "sm_clock_mhz")

    def gpu(values):
        return Series("g", "s", np.arange(40), np.arange(40), {c: values(c) for c in columns})

    doubles = [gpu(lambda c: rng.uniform(0, 300_000, 40)) for _ in range(3)]
    kinds = [doubles, doubles[:1], doubles + [gpu(lambda c: np.where(np.arange(40) == 7, np.nan, 1.5))],
             doubles + [gpu(lambda c: np.arange(40))], []]
    for gpus in kinds:
        for cut in (slice(3, 30), slice(5, 5)):
            cuts = [cut] * len(gpus)
            got = pipeline._readings(gpus, cuts)
            assert list(got) == ["power_w", "energy_mj", "util_gpu_pct", "mem_used_mib", "temp_c", "sm_clock_mhz"]
            for name, column in zip(got, columns):
                want = [pipeline._finite_list(g.values[column][cut], 1000.0 if column == "power_mw" else None)
                        for g in gpus]
                assert [list(map(repr, x)) for x in got[name]] == [list(map(repr, x)) for x in want]


def test_sample_offsets_are_pythons_round():
    rng = np.random.default_rng(3)
    k = rng.integers(0, 10**11, 20_000)
    halves = (k + 0.5) / 1e6  # exactly between two µs: the cases a rint of x·1e6 could get wrong
    arrays = [rng.uniform(-s, s, 20_000) for s in (1e-3, 1.0, 3600.0, 86_400.0, 1e8, 1e12)]
    arrays += [halves, np.nextafter(halves, 0), np.nextafter(halves, np.inf),
               np.array([0.0, -0.0, 5e-7, -5e-7, 1.5e-6, 2.5e-6, np.nan, np.inf, -np.inf, 2.0**53])]
    for t_s in arrays:
        for a_s in (0.0, 12.345678901, -1000.5):
            got = pipeline._offsets(t_s, a_s)
            want = [round(x - a_s, 6) for x in t_s.tolist()]
            assert list(map(repr, got)) == list(map(repr, want))


def test_csv_text_is_cell_by_cell():
    columns = ["f", "i", "s", "b", "mixed", "none"]
    rows = [{"f": R.choice([1.5, None, float("nan"), 1e-9, -0.0, 123456.789]), "i": R.choice([1, None, 2**80]),
             "s": R.choice(["a,b", 'q"', "", None, "中"]), "b": R.choice([True, False, None]),
             "mixed": R.choice([1, 2.5, "x", None, True, [1, 2], np.float64(3.25)])} for _ in range(500)]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for row in rows:
        w.writerow([tables.cell(row.get(c)) for c in columns])
    assert tables.csv_text(columns, rows) == buf.getvalue()


def test_report_cells_follow_their_per_cell_rules():
    columns = ["latency_s", "model", "status", "ok", "output_tokens", "error", "gpu_energy_j"]
    rows = [{"latency_s": R.choice([1.25, None, float("nan"), 12345.6, 2]), "model": R.choice(["m<1>", "m&2", "7"]),
             "status": R.choice(["ok", "failed"]), "ok": R.choice([True, False, None]),
             "output_tokens": R.choice([10, 123456, None]), "error": R.choice([None, "a\x1b[31m|b", ["x"]]),
             "gpu_energy_j": R.choice([np.float64(1.5), 0.0, -3.25e-5, float("inf")])} for _ in range(300)]
    for lang in ("en", "zh"):
        cells = []
        for r in rows:
            for c in columns:
                v = r.get(c)
                n = finite(v, text=False)
                attr = f' data-v="{n!r}"' if n is not None else ""
                cells.append(f"<td{attr}>{report_html.esc(report.fmt_num(cell_value(c, v, lang)))}</td>")
        html = report_html.html_table("t", columns, rows, lang)
        assert "".join(cells) == html[html.index("<tbody>") + 7:html.index("</tbody>")].replace("<tr>", "").replace("</tr>", "")
        md = report.md_table(columns, rows, lang).splitlines()[2:]
        assert md == ["| " + " | ".join(report._md_cell(cell_value(c, r.get(c), lang)) for c in columns) + " |"
                      for r in rows]


@pytest.mark.parametrize("block", [2, 1 << 14])  # ratios made into Python floats a block at a time
def test_run_to_run_and_outliers_match_their_definitions(block, monkeypatch):
    monkeypatch.setattr(pipeline, "_OUTLIER_BLOCK", block)
    members = [{"case": R.choice([1, 2, 3]), "latency_s": R.choice([1.0, 2.0, 2.5, None, 7.0, 30.0])} for _ in range(200)]
    by_case = {}
    for r in members:
        if r["latency_s"] is not None:
            by_case.setdefault(str(r["case"]), []).append(r["latency_s"])
    repeated = [v for v in by_case.values() if len(v) >= 2]
    ss = math.fsum((x - math.fsum(v) / len(v)) ** 2 for v in repeated for x in v)
    got = tables.run_to_run(members, "latency_s")
    assert got["run_to_run_std"] == math.sqrt(ss / sum(len(v) - 1 for v in repeated))

    for _ in range(300):
        rows = [{"status": "ok", "model": "m", "case": 0, "latency_s": R.choice([1, 2, 2.5, 3.0, 10.0, 0.1, 7])}
                for _ in range(R.randint(1, 9))]
        pipeline.mark_outliers(rows)
        for r in rows:
            others = sorted(x["latency_s"] for x in rows if x is not r)
            if others:
                assert r["latency_vs_twins"] == r["latency_s"] / others[(len(others) - 1) // 2]
                assert r["latency_outlier"] == (r["latency_vs_twins"] > pipeline.OUTLIER_FACTOR)
            else:
                assert "latency_vs_twins" not in r


def test_text_written_in_parts_is_the_text_written_whole(tmp_path):
    """write_text of parts, or of a text longer than the piece it encodes at a time, writes the bytes of
    the whole text encoded at once (utf-8-sig: one BOM; characters beyond Latin-1 across the cuts)."""
    parts = ["head—", "中" * (outputs._PIECE + 3), "", "tail\n" * 5, "é"]
    whole = "".join(parts)
    for encoding in ("utf-8", "utf-8-sig"):
        want = whole.encode(encoding)
        for i, text in enumerate((parts, whole, [whole])):
            path = outputs.write_text(tmp_path / f"{encoding}-{i}.txt", text, encoding)
            assert path.read_bytes() == want
        path = outputs.write_text(tmp_path / f"{encoding}-skip.txt", parts, encoding, skip_unchanged=True)
        assert path.read_bytes() == want


def test_parts_made_as_written_that_fail_leave_the_last_good_file(tmp_path):
    """report.html's parts are made as they are written: one that fails leaves the file as it was and
    no temporary file beside it."""
    path = outputs.write_text(tmp_path / "report.html", "good\n")

    def parts():
        yield "new " * (outputs._PIECE // 2)
        raise ValueError("a part failed")

    with pytest.raises(ValueError, match="a part failed"):
        outputs.write_text(path, parts())
    assert path.read_text(encoding="utf-8") == "good\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_report_html_file_is_the_rendered_page(tmp_path):
    """write_all writes report.html from its parts: the bytes of render_html's page."""
    from analyzer.stream import build
    from shared.batch import BatchDir
    from tests import synth as S

    spec = S.Spec(duration_s=12.0, gpus=[S.Gpu(S.constant(100.0))], requests=[S.Req(1.0, 4.0, run=0),
                                                                            S.Req(5.0, 9.0, run=1, ok=False)])
    analysis = pipeline.analyze(build(S.messages(spec), 120.0), pipeline.Options(quality=False))
    bd = BatchDir(tmp_path / "b")
    outputs.write_all(analysis, bd, make_plots=False, lang="both")
    for lang, name in (("en", "report.html"), ("zh", "report.zh.html")):
        assert (bd.summary / name).read_bytes() == report_html.render_html(analysis, lang).encode("utf-8")


def test_gpus_sampled_at_equal_times_share_one_times_array():
    """A stretch gives the GPUs sampled at equal times one times array (so a request works out their
    window and offsets once), and a GPU sampled at other times its own, each its times from the origin."""
    from analyzer.stream import BatchData, Series

    t = np.arange(40, dtype=np.int64) * 10_000_000 + 5_000_000_000

    def gpu(key, t_ns):
        return Series(key, "s", t_ns, np.arange(t_ns.size), {})

    gpus = [gpu("a", t), gpu("b", t.copy()), gpu("c", t + 1), gpu("d", t[:-1]), gpu("e", t.copy())]
    tele = pipeline._Stretch(BatchData(4_000_000_000, gpus, None, {}, {}, {}, [], None, None))
    got = [tele.t_s(g) for g in gpus]
    assert got[0] is got[1] is got[4] and len({id(x) for x in got}) == 3
    for g, t_s in zip(gpus, got):
        assert t_s.tolist() == ((g.t_ns - 4_000_000_000) / 1e9).tolist() and tele.t_s(g) is t_s


def test_request_json_gives_each_gpu_its_own_sample_times(tmp_path):
    """GPUs sampled at equal times and one sampled at other times: each GPU's list of a request's
    sample times holds its own samples in the window, as offsets from the window's start."""
    from analyzer import stream
    from shared.recording import read_recording
    from tests import synth as S

    spec = S.Spec(duration_s=3.0, gpus=[S.Gpu(S.constant(100.0)) for _ in range(3)], requests=[S.Req(1.0, 2.0)])
    _, items, problem = read_recording(S.write_batch(tmp_path / "batch", spec).stream)
    batch = stream.build(items)
    batch.gpus[2].t_ns = batch.gpus[2].t_ns + 3_000_000  # sampled 3 ms later
    a = pipeline.analyze(batch, pipeline.Options(quality=False), recording_problem=problem)
    j = next(iter(a.request_json.values()))
    full = j["system_metrics_full"]
    a_s, b_s = full["window_start_s"], full["window_end_s"]
    for g in batch.gpus:
        t_s = ((g.t_ns - batch.origin_ns) / 1e9).tolist()
        assert full["gpus"][g.key]["t_s"] == [round(t - a_s, 6) for t in t_s if a_s <= t <= b_s]
    gpus = list(full["gpus"].values())
    assert gpus[0]["t_s"] == gpus[1]["t_s"] != gpus[2]["t_s"]
