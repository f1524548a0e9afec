"""report.html in a real browser: headless Chromium opens the page offline (file://, a CSP that forbids
every external load), and the test fails on any console message or script error, on a plot that did
not render, or on a table without rows. A screenshot of every run is kept in the test's temp dir.

The batch is a real recording (tests/synth.py) analysed by the real pipeline with the real quality
step (chrF, no BART weights): three models, QA and creative, three runs each, one failed request,
and a model name that is an HTML injection attempt."""
from __future__ import annotations

import re
import subprocess
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from analyzer import outputs, pipeline, report_html, stream
from shared.messages import BatchEnd
from shared.recording import read_recording
from tests import synth as S
from tests.conftest import require_chromium

HOSTILE = 'evil"><img src=x onerror="document.title=1">'
# what a server might put in an error text: a script, a javascript: link, Markdown that injects HTML
HOSTILE_ERROR = ('HTTP 500 <script>document.title="pwned"</script> [click](javascript:document.title="pwned") '
                 '![x](x" onerror="document.title=\'pwned\')')


def chromium() -> str:
    """The browser binary (env CHROMIUM overrides): without one the test is skipped with the install line,
    and fails under CI=true (.ci/run installs it) — tests/conftest.py's one rule for system parts."""
    return require_chromium()


def browse(page: Path, shot: Path, tmp: Path) -> tuple[str, list[str]]:
    """(the DOM after the page's scripts ran, console lines) from headless Chromium, plus a screenshot."""
    base = [chromium(), "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", "--hide-scrollbars",
            f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=3000",
            "--enable-logging=stderr", "--v=0"]
    url = page.resolve().as_uri()
    dom = subprocess.run(base + ["--dump-dom", url], capture_output=True, text=True, encoding="utf-8",
                         errors="replace", timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    subprocess.run(base + ["--window-size=1280,2600", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120, check=True)
    console = [line for line in dom.stderr.splitlines() if ":CONSOLE" in line]
    return dom.stdout, console


class _Tables(HTMLParser):
    """Rows per <table class="data"> body and the ids of <svg class="plot"> in a DOM dump."""

    def __init__(self):
        super().__init__()
        self.rows: dict[str, int] = {}
        self.plots: list[str] = []
        self._table: str | None = None
        self._in_body = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and "data" in (a.get("class") or "").split():
            self._table = a.get("id") or f"#{len(self.rows)}"
            self.rows[self._table] = 0
        elif tag == "tbody" and self._table:
            self._in_body = True
        elif tag == "tr" and self._in_body:
            self.rows[self._table] += 1
        elif tag == "svg" and "plot" in (a.get("class") or "").split():
            self.plots.append(a.get("id"))

    def handle_endtag(self, tag):
        if tag == "tbody":
            self._in_body = False
        elif tag == "table":
            self._table = None


def spec() -> S.Spec:
    cases = [{"prompt": "What is the capital of France?", "task": "qa", "load": "short", "lang": "en",
              "reference_text": "Paris is the capital of France."},
             {"prompt": "Write a poem about the sea.", "task": "creative", "load": "short", "lang": "en"}]
    texts = {0: ["Paris is the capital of France.", "The capital is Paris.", "France's capital city is Paris."],
             1: ["The sea at night is dark and wide, the moon sails over the restless tide.",
                 "Waves roll in, waves roll out, silver foam and the gulls about.",
                 "Night sea, black glass, stars drown slowly as the hours pass."]}
    reqs, t = [S.Req(0.3, 0.6, model="m-small:1b", warmup=True, rid="warmup/m-small")], 1.0
    for run in range(3):
        for case in range(2):
            for mi, model in enumerate(("m-small:1b", "m-large:7b", HOSTILE)):
                dur = 0.4 + 0.25 * mi + 0.05 * run
                ok = not (model == HOSTILE and run == 2 and case == 1)
                reqs.append(S.Req(t, t + dur, model=model, task=cases[case]["task"], run=run, case=case, ok=ok,
                                  error=HOSTILE_ERROR,
                                  text=texts[case][(run + mi) % 3], rid=f"r/{mi}/{case}/{run}",
                                  eval_count=30 + 10 * mi, eval_duration_ns=int(dur * 0.8e9)))
                t += dur + 0.1
    return S.Spec(duration_s=t + 1.0, rate_hz=50.0, gpus=[S.Gpu(S.square(180.0, 60.0, 1.3), refresh_s=0.1)],
                  rapl_w=30.0, requests=reqs, batch_id="browser", cases=cases)


@pytest.fixture(scope="module")
def analysis(tmp_path_factory):
    bd = S.write_batch(tmp_path_factory.mktemp("batch") / "b", spec())
    _, items, problem = read_recording(bd.stream)
    opts = pipeline.Options(quality=True, quality_options={"enable_bart": False})
    return pipeline.analyze(stream.build(items), opts, recording_problem=problem)


def write(analysis, root: Path, lang: str) -> Path:
    from shared.batch import BatchDir

    bd = BatchDir(root)
    outputs.write_all(analysis, bd, make_plots=False, lang=lang)
    return bd.summary / ("report.zh.html" if lang == "zh" else "report.html")


@pytest.mark.parametrize("lang", ["en", "zh"])
def test_report_renders_in_headless_chromium(analysis, tmp_path, lang):
    page = write(analysis, tmp_path / "batch", lang)
    shot = tmp_path / f"report-{lang}.png"
    dom, console = browse(page, shot, tmp_path)
    assert console == [], "console output from report.html:\n" + "\n".join(console)
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert 'data-report="ok"' in root and "data-errors" not in root, root
    parsed = _Tables()
    parsed.feed(dom)
    # one scatter per task (qa on chrF, creative on diversity) and the power timeline
    assert sorted(parsed.plots) == ["scatter-0", "scatter-1", "timeline-0"]
    assert 'data-plots="3"' in root
    assert parsed.rows and all(n > 0 for n in parsed.rows.values()), parsed.rows
    assert parsed.rows["results"] == len(analysis.results) == 18
    # the hostile model name and error text are text, not markup: no script ran, nothing links out
    assert "pwned" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    assert "document.title=1" not in re.search(r"<title>(.*?)</title>", dom, re.S).group(1)
    html_text = page.read_text(encoding="utf-8")
    assert "&lt;script&gt;document.title" in html_text  # shown (the failed request's error), escaped
    assert "<img" not in html_text and "onerror=" not in html_text.replace("onerror=&quot;", "")
    assert "<script>document" not in html_text and 'href="javascript' not in html_text
    assert not re.search(r'(src|href)="(https?:)?//', html_text)
    assert shot.is_file() and shot.stat().st_size > 20_000  # kept in tmp_path for a look


def test_broken_page_is_caught(analysis, tmp_path):
    """The checker can fail: a script error and an external image in a copy of the report are reported."""
    page = write(analysis, tmp_path / "batch", "en")
    broken = page.with_name("broken.html")
    broken.write_text(page.read_text(encoding="utf-8").replace(
        "<h1>", '<img src="http://127.0.0.1:9/x.png"><script>undefinedFunction()</script><h1>'), encoding="utf-8")
    dom, console = browse(broken, tmp_path / "broken.png", tmp_path)
    root = re.search(r"<html[^>]*>", dom).group(0)
    assert console and "data-errors" in root and "undefinedFunction" in root


def test_en_and_zh_reports_carry_the_same_numbers(analysis, tmp_path):
    en = write(analysis, tmp_path / "en", "en").read_text(encoding="utf-8")
    zh = write(analysis, tmp_path / "zh", "zh").read_text(encoding="utf-8")
    cells = re.compile(r'data-v="([^"]+)"')
    assert cells.findall(en) == cells.findall(zh) and len(cells.findall(en)) > 100
    assert '<html lang="zh-CN"' in zh and "组效质比" in zh and "每千焦的质量分" in zh
    md_zh = (tmp_path / "zh" / "summary" / "report.zh.md").read_text(encoding="utf-8")
    assert "## 问题" in md_zh and "效质比" in md_zh
    # CSV column names never change with the report language
    assert (tmp_path / "en" / "summary" / "results.csv").read_bytes() == \
        (tmp_path / "zh" / "summary" / "results.csv").read_bytes()


def test_problems_say_why_and_units_are_readable(analysis):
    text = report_html.render_html(analysis, "en")
    problems = text[text.index('id="problems"'):text.index("</ul>", text.index('id="problems"'))]
    assert "1 request(s) failed" in problems and "HTTP 500 &lt;script&gt;" in problems
    assert "GPU was simulated" in problems
    assert not re.search(r"\d[eE][-+]\d", re.sub(r'data-v="[^"]*"|points="[^"]*"|<style>.*?</style>', "", text, flags=re.S))
    assert "效质比" in text[:text.index("</div>")]  # named and defined at the top


def test_problems_name_skips_contention_and_cache_hits(analysis):
    """The batch's own figures drive the lines: batch.end's skipped tally, busy host windows, cached prompts."""
    import dataclasses

    from analyzer.report import problem_list

    rows = [dict(r) for r in analysis.results]
    rows[0].update(cpu_util_avg=97.0, prompt_cached_tokens=12)
    rows[1].update(prompt_cached_tokens=30)
    changed = dataclasses.replace(analysis, results=rows, batch_end=BatchEnd(batch="browser", skipped=2))
    en = "\n".join(problem_list(changed, "en"))
    assert "2 planned request(s) were skipped" in en
    assert "during 1 of 17 request window(s)" in en
    assert "2 request(s) reused prompt tokens from the server's cache (42 tokens in all)" in en
    zh = "\n".join(problem_list(changed, "zh"))
    assert "2 个计划中的请求被跳过" in zh and "共 42 个" in zh
    assert "reused" not in "\n".join(problem_list(analysis, "en"))  # the synthetic batch had no cache hit


def test_problems_counted_a_block_of_rows_at_a_time_are_those_of_all_at_once(analysis, monkeypatch):
    """problem_list reads a week's results a block of rows at a time: every count, the first reason, the
    first failures named and the reasons' order are those of one pass, blocks cutting through them."""
    import dataclasses

    from analyzer import report

    rows = []
    for i in range(61):
        r = dict(analysis.results[i % len(analysis.results)])
        r.update(status="ok", ok=True, error=None, task=["qa", "summary", "chat"][i % 3], quality_score=0.5,
                 cpu_util_avg=99.0 if i % 5 == 0 else 10.0, prompt_cached_tokens=i if i % 4 == 0 else None,
                 total_energy_j=None if i % 6 == 0 else 2.0, quality_error=None, run=i)
        if i % 7 == 0:
            r.update(quality_basis="chrf", bartscore_error=f"no checkpoint {i}", bartscore_model=f"bart-{i % 2}")
        if i % 8 == 3:
            r.update(quality_score=None, quality_error=["timeout", "empty answer", "empty answer"][i // 8 % 3])
        if i % 9 == 4:
            r.update(status="failed", ok=False, error=f"HTTP 500 #{i}")
        rows.append(r)
    changed = dataclasses.replace(analysis, results=rows, quality_ran=True)
    whole = report.problem_list(changed, "en")
    monkeypatch.setattr(report, "_PROBLEM_BLOCK", 4)
    assert report.problem_list(changed, "en") == whole
    text = "\n".join(whole)
    ok = [r for r in rows if r["status"] == "ok"]
    assert "scored by chrF / 100" in text and "no checkpoint 0" in text and "no checkpoint 7" not in text
    failed = [r for r in rows if r["status"] == "failed"]
    assert f"{len(failed)} request(s) failed" in text and "HTTP 500 #4:" not in text and "#4: HTTP 500 #4" in text
    assert f"#{failed[5]['run']}: " not in text and " …" in text  # five named, the rest counted
    assert f"during {sum(r['cpu_util_avg'] > 90 for r in ok)} of {len(ok)} request window(s)" in text
    cached = [r["prompt_cached_tokens"] for r in rows if r["prompt_cached_tokens"]]
    assert f"{len(cached)} request(s) reused prompt tokens from the server's cache ({sum(cached)} tokens" in text
    assert f"{sum(r['total_energy_j'] is None for r in ok)} successful request(s) have no energy figure" in text
    missing = [r["quality_error"] for r in ok if r["quality_score"] is None and r["task"] != "chat"]
    assert [line for line in whole if "have no quality score" in line] == \
        [f"{n} successful request(s) have no quality score: {why}" for why, n in Counter(missing).most_common()]


def test_md_and_html_count_the_requests_by_status_alike(analysis):
    """report.md's and report.html's requests line: each status counted, the warm-up apart."""
    import dataclasses

    from analyzer import report

    rows = [dict(r) for r in analysis.results]
    next(r for r in rows if r["status"] == "ok")["status"] = "incomplete"
    changed = dataclasses.replace(analysis, results=rows)
    line = "Requests: 18 measured (16 ok, 1 failed, 1 incomplete), 1 warm-up"
    assert line in report.render(changed, []) and line in report_html.render_html(changed, "en")


def test_numbers_read_without_exponents():
    from analyzer.report import fmt_num

    assert [fmt_num(x) for x in (3.4e-05, 0.5, 12.345, 2491.3, 0.0, None, True, 12)] == [
        "0.0000340", "0.500", "12.3", "2,491", "0", "", "true", "12"]


def test_suite_only_batch_has_no_empty_energy_vs_quality_section(tmp_path):
    """A batch of benchmark-suite items only (--suite, no built-in tasks): the suites have their own
    section, so report.html and report.md show no per-task energy/quality heading with nothing under it."""
    cases = [{"prompt": f"What is {i} + 40?", "task": "suite", "load": "all", "lang": "en", "suite": "gsm8k:gsm",
              "item_id": f"g{i}", "suite_data": {"kind": "gsm8k", "target": str(40 + i)}} for i in range(3)]
    reqs, t = [], 1.0
    for model in ("m-small:1b", "m-large:7b"):
        for case in range(3):
            reqs.append(S.Req(t, t + 0.5, model=model, task="suite", load="all", run=1, case=case,
                              text=f"The answer is {40 + case}.", rid=f"s/{model}/{case}"))
            t += 0.7
    bd = S.write_batch(tmp_path / "suite_only", S.Spec(duration_s=t + 1.0, rate_hz=50.0, requests=reqs,
                                                       batch_id="suite_only", cases=cases))
    _, items, problem = read_recording(bd.stream)
    a = pipeline.analyze(stream.build(items), pipeline.Options(quality=True, quality_options={"enable_bart": False}),
                         recording_problem=problem)
    assert a.results and all(r.get("suite") == "gsm8k:gsm" for r in a.results) and a.suites
    outputs.write_all(a, bd, make_plots=False, lang="en")
    html = (bd.summary / "report.html").read_text(encoding="utf-8")
    md = (bd.summary / "report.md").read_text(encoding="utf-8")
    assert "suite-scatter-0" in html  # the suite's own energy/accuracy chart is there
    assert "Energy vs quality per task" not in html and 'id="scatter-0"' not in html
    assert "## Pareto front" not in md and "## " + report_html.t("suites", "en") in md


def test_a_long_timeline_keeps_each_runs_lowest_and_highest_point():
    """Decimation: the points cut into limit // 2 runs as numpy's array_split cuts them (the first
    n % k one longer), each run's first lowest and first highest point kept, in time order."""
    import numpy as np

    from analyzer.report_html import _decimate

    rng = np.random.default_rng(7)
    for n, limit in ((10, 10), (11, 10), (3001, 3000), (9999, 3000), (50, 4), (7, 2)):
        ts, ps = np.arange(n, dtype=float), rng.integers(0, 4, n).astype(float)
        keep = set()
        for run in np.array_split(np.arange(n), limit // 2):
            keep |= {int(run[np.argmin(ps[run])]), int(run[np.argmax(ps[run])])}
        want = sorted(keep) if n > limit else list(range(n))
        dt, dp = _decimate(ts, ps, limit)
        assert dt.tolist() == want and dp.tolist() == ps[want].tolist(), (n, limit)
