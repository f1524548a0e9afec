"""The Chinese report speaks Chinese: every English word left in report.zh.html / report.zh.md is a
name or data (models, tasks, rids, column names, flags, file names, units), never our own prose.
Also: outliers, the collector's fallback and the CPU TDP recorded with the batch reach the report."""
from __future__ import annotations

import html
import re
from html.parser import HTMLParser

import pytest

from analyzer import pipeline, report, report_html, stream
from analyzer.i18n import Msg, render
from tests import synth as S

# Technical names a Chinese reader sees in Chinese documentation too (units, products, formulas).
TECH = {"BARTScore", "GPU", "CPU", "chrF", "token", "tok", "kJ", "TDP", "ms", "ppm", "id", "boot", "exp", "gram",
        "distinct", "csv", "md", "html", "simulated", "true", "tel", "gpu", "TTFT", "ROUGE", "Pareto", "python", "DIR",
        "docs", "analyzer", "batch", "quality", "no", "bart", "efficiency",
        "HumanEval", "Codex", "GSM", "check", "MMLU", "CMMLU", "Eval", "Wilson", "Ollama", "SLO", "TPOT"}  # benchmark names, check() of HumanEval
FALLBACK_WHY = "test_cases.json:3: trailing comma before '}': JSON allows none after the last item; delete that comma"


def spec() -> S.Spec:
    base = S.tiny_spec()
    reqs = list(base.requests)
    t = base.duration_s - 1.5
    # a third run of case 0 on tiny-a that took 40 times as long as its twins: an outlier
    reqs.append(S.Req(t, t + 20.0, model="tiny-a:1b", task="qa", run=2, case=0, text="Paris is the capital of France.",
                      rid="tiny/tiny-a:1b/0/short/2"))
    config = {"settings": {"cpu_tdp_w": {"value": 95.0, "source": "config.py", "line": 2}},
              "fallback": {"flag": "--use-default-on-error",
                           "files": {"exp/test_cases.json": f"{FALLBACK_WHY} -> the built-in task set"}}}
    return S.Spec(**{**base.__dict__, "requests": reqs, "duration_s": t + 21.5, "config": config})


@pytest.fixture(scope="module")
def analysis():
    items = S.messages(spec())
    return pipeline.analyze(stream.build(items), pipeline.Options(quality_options={"enable_bart": False},
                                                                  cpu_tdp_w_explicit=False))


class _Text(HTMLParser):
    """Visible text and tooltips of a page (script and style left out)."""

    def __init__(self):
        super().__init__()
        self.skip, self.out = 0, []

    def handle_starttag(self, tag, attrs):
        self.skip += tag in ("script", "style")
        self.out += [v for k, v in attrs if k == "data-tip" and v]

    def handle_endtag(self, tag):
        self.skip -= tag in ("script", "style")

    def handle_data(self, data):
        if not self.skip:
            self.out.append(data)


def data_words(a) -> set[str]:
    """Every word that is data: cell values, names, rids, column names, the collector's quoted reason."""
    text = [str(v) for r in a.results + a.warmups for v in r.values() if v is not None]
    text += list(a.columns) + [FALLBACK_WHY, "exp/test_cases.json"]
    text += [str(x) for tl in a.timelines for x in (tl["key"], tl.get("name"), tl.get("gpu_id"))]
    text += [w["label"] for w in a.windows] + [a.batch_id or ""]
    return {w for x in text for w in re.findall(r"[A-Za-z][A-Za-z_]+", x)}


def english_left(text: str, allowed: set[str]) -> set[str]:
    text = html.unescape(re.sub(r"\\(.)", r"\1", text))  # Markdown and entity escapes (cpu\_energy, &lt;) are still names
    text = re.sub(r"--[a-z][a-z-]+", " ", text)  # command-line flags are names
    text = re.sub(r'"[^"\n]*"', " ", text)  # quoted literals (stop sequences, keys) are data
    text = re.sub(r"[\w./-]+\.(csv|py|json|html|md|msgpack)\b", " ", text)  # file names
    text = re.sub(r"\b[a-z]+(_[a-z0-9]+)+\b", " ", text)  # column and setting names
    text = re.sub(r"\b[A-Z]+(_[A-Z0-9]+)+\b", " ", text)  # environment variables (OLLAMA_NUM_PARALLEL)
    return {w for w in re.findall(r"[A-Za-z][A-Za-z]+", text) if w not in allowed}


def test_zh_pages_hold_no_english_prose(analysis):
    allowed = TECH | data_words(analysis)
    page = report_html.render_html(analysis, "zh")
    p = _Text()
    p.feed(page)
    left = english_left("\n".join(p.out), allowed)
    assert left == set(), f"English words in report.zh.html: {sorted(left)}"
    left = english_left(report.render(analysis, [], lang="zh"), allowed)
    assert left == set(), f"English words in report.zh.md: {sorted(left)}"
    # and the checker finds English where there is some: the English page is full of it
    assert len(english_left(report.render(analysis, [], lang="en"), allowed)) > 20


def test_notes_are_apart_from_problems_and_translated(analysis):
    md_zh = report.render(analysis, [], lang="zh")
    problems, notes = md_zh.split("## 问题")[1].split("## 分析说明")
    assert "已关闭 BARTScore" in notes and "已关闭 BARTScore" not in problems  # a note, not a problem
    assert "CPU TDP 为 95 W" in notes
    assert "是" in md_zh or "否" in md_zh
    assert "含交互图表的同一报告：report.zh.html。" in md_zh  # the Chinese page, beside it


def test_fallback_is_the_first_problem_in_both_languages(analysis):
    en = report.problem_list(analysis, "en")
    assert en[0].startswith("FALLBACK: exp/test_cases.json was bad, so --use-default-on-error ran the built-in "
                            "task set instead") and FALLBACK_WHY in en[0]
    assert report.problem_list(analysis, "zh")[0].startswith("已回退：exp/test_cases.json 有错误，"
                                                             "--use-default-on-error 改用了内置任务集")
    assert "FALLBACK" in report_html.render_html(analysis, "en").split('id="problems"')[1].split("</ul>")[0]


def test_the_slow_twin_is_flagged(analysis):
    rows = {r["rid"]: r for r in analysis.results}
    slow = rows["tiny/tiny-a:1b/0/short/2"]
    assert slow["latency_outlier"] is True and slow["latency_vs_twins"] > 30
    twins = [rows["tiny/tiny-a:1b/0/short/0"], rows["tiny/tiny-a:1b/0/short/1"]]
    assert [r["latency_outlier"] for r in twins] == [False, False]
    assert rows["tiny/tiny-b:3b/0/short/0"]["latency_outlier"] is False  # two runs: compared with each other
    line = next(p for p in report.problem_list(analysis, "en") if "latency of the same case's other runs" in p)
    assert line.startswith("1 request(s) took more than 3×") and "tiny/tiny-a:1b/0/short/2 (" in line


def test_outlier_rule_uses_the_lower_median_of_the_others():
    def row(rid, lat, case=0):
        return {"rid": rid, "status": "ok", "latency_s": lat, "model": "m", "case": case, "task": "qa", "load": "short"}
    rows = [row("a", 1.0), row("b", 40.0), row("c", 41.0), row("alone", 99.0, case=1)]
    out = pipeline.mark_outliers(rows)
    # two slow runs of three still stand out against the fast one (a plain median would hide them)
    assert [r["rid"] for r in out] == ["b", "c"] and rows[0]["latency_outlier"] is False
    assert "latency_outlier" not in rows[3]  # no other run: no verdict
    assert pipeline.mark_outliers([row("x", 1.0), row("y", 2.9)]) == []  # under 3×: not an outlier
    levels = [row("l1", 1.0), row("l1b", 1.1), {**row("l8", 9.0), "sweep_level": 8}, {**row("l8b", 9.5), "sweep_level": 8}]
    assert pipeline.mark_outliers(levels) == []  # a sweep's busier level is not an outlier of the idle one


def test_cpu_tdp_recorded_by_the_collector_is_used_unless_the_flag_says_otherwise(analysis):
    assert {r["cpu_tdp_w"] for r in analysis.results} == {95.0}
    items = S.messages(spec())
    flagged = pipeline.analyze(stream.build(items), pipeline.Options(quality=False, cpu_tdp_w=40.0))
    assert {r["cpu_tdp_w"] for r in flagged.results} == {40.0}
    a, b = (next(r for r in x.results if r["rid"] == "tiny/tiny-a:1b/0/short/0") for x in (analysis, flagged))
    assert a["cpu_energy_j_approx"] == pytest.approx(b["cpu_energy_j_approx"] * 95.0 / 40.0, rel=1e-6)


def test_msg_is_its_english_text_and_renders_nested():
    m = Msg("p_fallback", file="f.json", why="bad", instead=Msg("fb_builtin"))
    assert m == "FALLBACK: f.json was bad, so --use-default-on-error ran the built-in task set instead; fix the " \
                "file and run a new batch to measure your own cases. Why: bad"
    assert "内置任务集" in render(m, "zh") and render("plain", "zh") == "plain"
    import copy
    import pickle
    for again in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert again == m and render(again, "zh") == render(m, "zh")


def test_no_bart_and_lang_flags_of_the_analyzer():
    from analyzer import cli

    args = cli.build_parser().parse_args(["--batch", "b", "--no-bart", "--lang", "zh"])
    assert cli.options_from(args).quality_options == {"enable_bart": False}
    assert cli.report_lang(args.report_lang) == "zh"  # --lang is --report-lang, as in analyzer.compare
    default = cli.build_parser().parse_args(["--batch", "b"])
    assert cli.report_lang(default.report_lang) == "both" and cli.report_lang("auto") == "both"
    assert not cli.options_from(default).cpu_tdp_w_explicit  # the batch's recorded TDP may be used


def test_partial_batch_says_so_in_chinese_with_the_resume_command(tmp_path):
    base = S.tiny_spec()
    spec = S.Spec(**{**base.__dict__, "interrupted": True, "planned": 20})
    a = pipeline.analyze(stream.build(S.messages(spec)),
                         pipeline.Options(quality=False, batch_dir=tmp_path / "b"))
    en = next(p for p in report.problem_list(a, "en") if p.startswith("PARTIAL"))
    zh = next(p for p in report.problem_list(a, "zh") if p.startswith("不完整"))
    assert en.startswith("PARTIAL: the batch was interrupted; 11 of 20 planned request(s) have a successful result")
    assert zh.startswith("不完整：批次被中断；计划的 20 个请求中有 11 个成功；运行 `python -m collector --exp-dir")
    assert str(tmp_path / "b") in zh and "--resume" in zh and not any("PARTIAL" in p for p in report.problem_list(a, "zh"))


def sweep_spec() -> S.Spec:
    """Two models through concurrency levels 1, 2, 4; at 4 the first token waits (a queue)."""
    reqs, t = [], 0.5
    for level, dur in ((1, 1.0), (2, 1.0), (4, 4.0)):
        for run in range(3):
            for model in ("tiny-a:1b", "tiny-b:3b"):
                first = dur * 0.9 if level == 4 else 0.05
                reqs.append(S.Req(t, t + dur, model=model, run=run, sweep="concurrency", sweep_level=level,
                                  chunk_s=[first, dur * 0.95]))
                t += dur + 0.2
    return S.Spec(duration_s=t + 1.0, requests=reqs, load={"swept": True})


def test_a_sweep_batch_zh_report_holds_no_english_prose():
    from analyzer import columns as COLS
    from analyzer import load_curve

    slo = {"ttft": 500.0}
    a = pipeline.analyze(stream.build(S.messages(sweep_spec())), pipeline.Options(quality=False, goodput=slo))
    assert len(a.load_curve) == 6 and any(r.get("queueing") for r in a.load_curve)
    # names: quality bases, the SLO as the user gave it (--goodput ttft:500)
    allowed = TECH | data_words(a) | {b.name for b in COLS.BASES} | set(re.findall(r"[a-z]+", load_curve.slo_text(slo)))
    page = report_html.render_html(a, "zh")
    p = _Text()
    p.feed(page)
    html_text = "\n".join(p.out)
    assert "负载下的能耗" in html_text and 'id="load-curve-plot"' in page
    left = english_left(html_text, allowed)
    assert left == set(), f"English words in a sweep batch's report.zh.html: {sorted(left)}"
    md = report.render(a, [], lang="zh")
    left = english_left(md, allowed)
    assert left == set(), f"English words in a sweep batch's report.zh.md: {sorted(left)}"
    # the queue is a problem in Chinese, the level window's energy a note (not a problem)
    probs, notes = report.problem_list(a, "zh"), report.note_list(a, "zh")
    assert any(x.startswith("排队：tiny-a:1b 在并发 4 下") for x in probs)
    assert any("完整时间窗" in n for n in notes) and not any("完整时间窗" in x for x in probs)
    assert any(x.startswith("QUEUEING: tiny-a:1b at concurrency 4") for x in report.problem_list(a, "en"))
    # the checker sees the English page's sweep prose
    assert {"queue", "slot"} <= english_left(report.render(a, [], lang="en"), allowed)


def test_suites_leaderboard_and_live_page_hold_no_english_prose(analysis):
    import dataclasses

    from analyzer import columns as COLS
    from analyzer import live_page, tables

    stats = [{"suite": "gsm8k", "model": m, "metric": metric, "mean": v, "n": 20, "ci95_low": v - 0.1,
              "ci95_high": v + 0.1, "quality_basis": "exact_match"}
             for m, acc in (("tiny-a:1b", 0.6), ("tiny-b:3b", 0.8))
             for metric, v in (("accuracy", acc), ("accuracy_strict", acc - 0.1), ("j_per_item", 10.0),
                               ("j_per_correct", 15.0), ("pass@1", acc))]
    a = dataclasses.replace(analysis, suites=tables.suite_board(stats))
    # names: the suite, the bases, pass@k and "5-shot" (the benchmarks' own terms)
    allowed = TECH | data_words(analysis) | {b.name for b in COLS.BASES} | {"gsm", "pass", "shot"}
    p = _Text()
    p.feed(report_html.render_html(a, "zh"))
    html_text = "\n".join(p.out)
    assert "基准测试" in html_text and "准确率" in html_text
    assert english_left(html_text, allowed) == set()
    assert english_left(report.render(a, [], lang="zh"), allowed) == set()
    # the live page: its static text and every word its script shows (placeholders are names)
    p = _Text()
    p.feed(live_page.render_page("zh"))
    assert english_left("\n".join(p.out), TECH) == set()
    shown = " ".join(re.sub(r"\{\w+\}", " ", str(v)) for v in live_page.words("zh").values())
    assert english_left(shown, TECH) == set(), shown
    en = " ".join(re.sub(r"\{\w+\}", " ", str(v)) for v in live_page.words("en").values())
    assert len(english_left(en, TECH)) > 10  # the checker sees the English page's words
