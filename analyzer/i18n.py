"""The report's words in English and Chinese (report.md and report.html; CSV column names never change).

``lang_from_env()`` picks the language when the user passed none: ``zh`` when the locale is Chinese
(LC_ALL / LC_MESSAGES / LANG, else the OS locale), otherwise ``en``.
"""
from __future__ import annotations

import locale
import os

from analyzer import columns as COLS

LANGS = ("en", "zh")

_TEXT: dict[str, dict[str, str]] = {
    "title": {"en": "Analysis report", "zh": "分析报告"},
    "ratio_name": {"en": "效质比 (efficiency/quality ratio)", "zh": "效质比（质量/能耗比）"},
    "ratio_def": {
        "en": "效质比 = quality points per kJ: a request's quality_score (0–1) divided by the energy it used "
              "(GPU + CPU, in kJ). Higher is better. Its inverse is J per quality point (lower is better). "
              "Per model and task, <b>group 效质比</b> is the ratio of the means (mean quality ÷ mean energy); "
              "<b>mean of per-request 效质比</b> averages each request's own ratio. The two differ and are "
              "always named apart.",
        "zh": "效质比 = 每千焦的质量分：单个请求的 quality_score（0–1）除以其能耗（GPU + CPU，单位 kJ），越高越好。"
              "其倒数为每质量分的焦耳数（越低越好）。按模型和任务汇总时，<b>组效质比</b>是均值之比（平均质量 ÷ 平均能耗）；"
              "<b>逐请求效质比均值</b>是各请求自身比值的平均。两者不同，名称始终区分。"},
    "basis_def": {
        "en": "Quality basis: {bases}. Scores of different bases are never averaged or compared on one front.",
        "zh": "质量依据：{bases}。不同依据的分数从不混合平均，也不放在同一前沿上比较。"},
    "sim_banner": {
        "en": "SIMULATED GPU DATA. The GPU telemetry of this batch came from the simulated source (simulated: true "
              "on tel.gpu). GPU power, energy, memory, utilisation and temperature are NOT measurements; rows carry "
              "gpu_simulated = true.",
        "zh": "GPU 数据为模拟数据。本批次的 GPU 遥测来自模拟源（tel.gpu 上 simulated: true）。GPU 功率、能耗、显存、利用率和温度"
              "并非实测值；相关行标记 gpu_simulated = true。"},
    "no_gpu": {"en": "No GPU telemetry in this batch: GPU columns are empty (not available), not zero.",
               "zh": "本批次没有 GPU 遥测：GPU 列为空（不可用），而不是零。"},
    "requests_line": {
        "en": "Requests: {n} measured ({ok} ok, {failed} failed, {inc} incomplete), {warm} warm-up (excluded from "
              "results and stats).",
        "zh": "请求：共测量 {n} 个（成功 {ok}，失败 {failed}，未完成 {inc}），预热 {warm} 个（不计入结果和统计）。"},
    "problems": {"en": "Problems", "zh": "问题"},
    "no_problems": {"en": "None found.", "zh": "未发现问题。"},
    "per_task": {"en": "Energy vs quality per task", "zh": "各任务的能耗与质量"},
    "task": {"en": "Task", "zh": "任务"},
    "basis": {"en": "quality basis", "zh": "质量依据"},
    "scatter_caption": {
        "en": "Each dot is one request (hover: model, load, run). Crosses are model means with 95% intervals "
              "(none when n < 3); the dashed line joins the Pareto-optimal models (no other model uses less "
              "energy for at least the same quality).",
        "zh": "每个点是一个请求（悬停显示模型、负载、轮次）。十字为模型均值及 95% 区间（n < 3 时不画）；虚线连接帕累托最优模型"
              "（没有其他模型能以更低能耗达到至少相同的质量）。"},
    "x_energy": {"en": "energy per request, GPU + CPU (J)", "zh": "每请求能耗，GPU + CPU（J）"},
    "y_quality": {"en": "quality_score", "zh": "质量分 quality_score"},
    "timeline": {"en": "Power timeline", "zh": "功率时间线"},
    "load_curve": {"en": "Energy under load", "zh": "负载下的能耗"},
    "load_curve_caption": {
        "en": "J per output token (GPU, each level's whole window, idle gaps included) against output tokens/s, one "
              "line per model through its load levels (labelled); filled rings: every request of the level met the "
              "SLOs ({slo}); bars: 95 % intervals from the spread of output lengths. Full table: load_curve.csv.",
        "zh": "每输出 token 能耗（GPU，按每个负载级别的完整时间窗，含空闲间隙）对输出 token/s，每个模型一条线，"
              "标注负载级别；实心圈：该级别所有请求均满足 SLO（{slo}）；误差线：由输出长度离散度得到的 95% 区间。"
              "完整表见 load_curve.csv。"},
    "x_tokens_per_s": {"en": "output tokens/s", "zh": "输出 token/s"},
    "y_j_per_token": {"en": "J per output token (GPU)", "zh": "每输出 token 能耗（J，GPU）"},
    "no_slo": {"en": "none set (--goodput)", "zh": "未设置（--goodput）"},
    "timeline_caption": {
        "en": "GPU power over time. Request windows are shaded: prefill (start to first token) darker, decode "
              "(first token to end) lighter; warm-ups grey. Hover a window for its request.",
        "zh": "GPU 功率随时间变化。请求时间窗着色：预填充（开始到首个 token）颜色较深，解码（首个 token 到结束）较浅；预热为灰色。"
              "悬停查看对应请求。"},
    "x_time": {"en": "time since batch origin (s)", "zh": "自批次起点的时间（s）"},
    "y_power": {"en": "GPU power (W)", "zh": "GPU 功率（W）"},
    "prefill": {"en": "prefill", "zh": "预填充"},
    "decode": {"en": "decode", "zh": "解码"},
    "warmup": {"en": "warm-up", "zh": "预热"},
    "pareto": {"en": "Pareto front and 效质比 per task", "zh": "各任务的帕累托前沿与效质比"},
    "results": {"en": "Results (one row per request)", "zh": "结果（每个请求一行）"},
    "stats": {"en": "Stats (mean, std, 95% CI over runs; full table in stats.csv)",
              "zh": "统计（多轮的均值、标准差、95% 置信区间；完整表见 stats.csv）"},
    "warmups": {"en": "Warm-up requests (not in results)", "zh": "预热请求（不计入结果）"},
    "failed_table": {"en": "Failed and incomplete requests", "zh": "失败与未完成的请求"},
    "low_coverage": {"en": "Low sample coverage", "zh": "采样覆盖率低"},
    "plots": {"en": "Plots", "zh": "图表"},
    "none": {"en": "(none)", "zh": "（无）"},
    "sort_hint": {"en": "Click a column heading to sort.", "zh": "点击列标题排序。"},
    "n_too_small": {"en": "n too small", "zh": "样本太少"},
    "simulated_suffix": {"en": " (SIMULATED GPU)", "zh": "（模拟 GPU）"},
    "html_note": {"en": "The same report with interactive plots: report.html.",
                  "zh": "含交互图表的同一报告：report.html。"},
    # Problems (counts and reasons; {…} filled in by the report)
    "p_quality_missing": {"en": "{n} successful request(s) have no quality score: {why}",
                          "zh": "{n} 个成功请求没有质量分：{why}"},
    "p_no_reference": {"en": "the case has no reference text to compare with; fix: add reference_text to the case "
                             "in test_cases.json",
                       "zh": "该用例没有可对比的参考答案；修复：在 test_cases.json 的用例中加入 reference_text"},
    "p_no_reason": {"en": "no reason recorded", "zh": "未记录原因"},
    "p_bart_fallback": {
        "en": "BARTScore could not run, so {n} QA/summary request(s) are scored by chrF / 100 (quality_basis = "
              "chrf). Reason and fix: {why}",
        "zh": "BARTScore 无法运行，因此 {n} 个问答/摘要请求改用 chrF / 100 评分（quality_basis = chrf）。原因与修复方法：{why}"},
    "p_energy_missing": {
        "en": "{n} successful request(s) have no energy figure (no telemetry covered their window), so no 效质比: "
              "start the telemetry daemon (python -m telemetry) before the collector.",
        "zh": "{n} 个成功请求没有能耗数据（其时间窗内没有遥测），因此没有效质比：请在采集器之前启动遥测守护进程（python -m telemetry）。"},
    "p_skipped": {"en": "{n} planned request(s) were skipped (a model the server does not have, or the batch was "
                        "stopped); see the collector's log.",
                  "zh": "{n} 个计划中的请求被跳过（服务器上没有该模型，或批次被中止）；见采集器日志。"},
    "p_failed": {"en": "{n} request(s) failed: {what}", "zh": "{n} 个请求失败：{what}"},
    "p_simulated": {"en": "The GPU was simulated: GPU energy, and so 效质比, are not measurements.",
                    "zh": "GPU 为模拟：GPU 能耗以及效质比都不是实测值。"},
    "p_contention": {
        "en": "The host CPU was near saturation (≥ {pct}% busy on average) during {n} of {total} request window(s): "
              "on a model served on the CPU this is the model itself; otherwise other processes may have inflated "
              "latency and CPU energy.",
        "zh": "在 {total} 个请求时间窗中有 {n} 个主机 CPU 接近饱和（平均占用 ≥ {pct}%）：若模型在 CPU 上运行，这就是模型本身；"
              "否则其他进程可能抬高了延迟和 CPU 能耗。"},
    "p_cache": {
        "en": "{n} request(s) reused prompt tokens from the server's cache ({tokens} tokens in all): their prefill "
              "was shorter than a cold request's, so their latency and energy are lower.",
        "zh": "{n} 个请求复用了服务器缓存中的提示 token（共 {tokens} 个）：其预填充比冷请求短，因此延迟和能耗偏低。"},
    "no_quality_plot": {"en": "No request of this task has both a quality score and an energy figure (see Problems).",
                        "zh": "该任务没有同时具备质量分和能耗数据的请求（见“问题”一节）。"},
    "p_pipeline": {"en": "Analysis notes", "zh": "分析说明"},
    # compare.html (python -m analyzer.compare)
    "compare_title": {"en": "Campaign comparison", "zh": "批次对比"},
    "compare_n_batches": {"en": "{n} batch(es)", "zh": "{n} 个批次"},
    "compare_def": {
        "en": "One row per task, quality basis, model and GPU (host / GPU name). Batches measured on different GPUs "
              "or scored on a different quality basis are never pooled; batches on the same GPU and basis are, and "
              "the row names them. Rank: by group 效质比 within the task and basis, only among rows that ran the same cases "
              "with the same max tokens (others are ranked apart, see Notes).",
        "zh": "每行对应一个任务、质量依据、模型和 GPU（主机 / GPU 型号）。在不同 GPU 上测量或以不同质量依据评分的批次从不合并；"
              "同一 GPU 与依据的批次会合并，并在该行列出。排名：同一任务与依据内按组效质比排序，且只在运行了相同用例、相同最大 token 数的行之间比较"
              "（其余分开排名，见“说明”）。"},
    "compare_sim": {"en": "Some batches used a SIMULATED GPU: their energy and 效质比 are not measurements (their rows "
                          "are kept apart and marked).",
                    "zh": "部分批次使用模拟 GPU：其能耗与效质比并非实测值（这些行单独列出并标记）。"},
    "compare_notes": {"en": "Notes", "zh": "说明"},
    "leaderboard": {"en": "Leaderboard", "zh": "排行榜"},
    "compare_caption": {
        "en": "Dots are requests (hover: batch, request id); crosses are row means with 95% intervals; the dashed "
              "line joins the Pareto-optimal rows. Click a column heading to sort.",
        "zh": "点为单个请求（悬停显示批次与请求 id）；十字为各行均值及 95% 区间；虚线连接帕累托最优的行。点击列标题排序。"},
    "batches": {"en": "Batches", "zh": "批次"},
    "suites": {"en": "Benchmark suites", "zh": "基准测试"},
    "suite": {"en": "Suite", "zh": "基准"},
    "suite_protocol": {
        "en": "Protocol: zero-shot generative (the item as a chat instruction, temperature 0 unless set; with "
              "several runs each run is a sample with its own seed, for pass@k), scored from the generated text as the "
              "benchmark scores it: HumanEval by its own check() in the sandbox, GSM8K by exact match of the number, "
              "multiple choice by the chosen letter. This is NOT the 5-shot log-likelihood protocol behind most "
              "published MMLU/C-Eval/CMMLU numbers. Accuracy has a Wilson 95% interval; pass@k is the unbiased "
              "estimator of the HumanEval paper; J per item = mean energy per request (GPU + CPU), J per correct "
              "answer = all energy ÷ correct answers; group 效质比 here is accuracy per kJ.",
        "zh": "协议：零样本生成式（题目作为聊天指令，除非另行设置否则温度为 0；多轮时每轮为一个使用各自随机种子的样本，用于 pass@k），"
              "按各基准自身的方式对生成文本评分：HumanEval 在沙箱中运行题目自带的 check()，GSM8K 精确匹配数字，选择题比较所选字母。"
              "这不是多数已发表 MMLU/C-Eval/CMMLU 成绩所用的 5-shot 对数似然协议。准确率附 Wilson 95% 区间；pass@k 为 HumanEval "
              "论文的无偏估计；每题能耗 = 每请求平均能耗（GPU + CPU），每个正确答案能耗 = 总能耗 ÷ 正确答案数；此处的组效质比即每千焦准确率。"},
    "like_with_like": {"en": "cases {cases} ({n} case(s)), max tokens {max_tokens}",
                       "zh": "用例集 {cases}（{n} 个用例），最大 token 数 {max_tokens}"},
}

# Headings of the columns that are not results.csv columns (stats, Pareto, compare); results.csv's own
# come from the column registry (analyzer/columns.py). The CSV names stay in the files; the report
# shows these, the name on hover.
_LABELS: dict[str, dict[str, str]] = {
    "metric": {"zh": "指标"}, "n": {"zh": "n"}, "n_failed": {"zh": "失败数"},
    "mean": {"zh": "均值"}, "std": {"en": "std (cases and runs)", "zh": "标准差（跨用例与轮次）"},
    "ci95_low": {"zh": "95% 下限"}, "ci95_high": {"zh": "95% 上限"},
    "ci95_note": {"en": "CI note", "zh": "区间说明"},
    "run_to_run_std": {"en": "run-to-run std (same case)", "zh": "同一用例轮次间标准差"},
    "n_cases": {"en": "cases", "zh": "用例数"}, "n_repeated_cases": {"en": "cases run twice or more", "zh": "重复运行的用例数"},
    "case_set": {"en": "case set", "zh": "用例集"},
    "total_energy_j_mean": {"en": "mean energy J", "zh": "平均能耗 J"},
    "quality_score_mean": {"en": "mean quality", "zh": "平均质量分"},
    "group_quality_per_kj": {"en": "group 效质比 (quality/kJ)", "zh": "组效质比（质量/kJ）"},
    "group_j_per_quality": {"en": "group J per quality point", "zh": "组每质量分焦耳"},
    "quality_per_kj_mean": {"en": "mean of per-request 效质比", "zh": "逐请求效质比均值"},
    "pareto_optimal": {"en": "Pareto-optimal", "zh": "帕累托最优"},
    "rank": {"zh": "排名"}, "host": {"zh": "主机"}, "gpu_name": {"en": "GPU", "zh": "GPU"},
    "batches": {"zh": "批次"}, "batch": {"zh": "批次"},
    "quality_per_kj_ci95_low": {"en": "效质比 95% low", "zh": "效质比 95% 下限"},
    "quality_per_kj_ci95_high": {"en": "效质比 95% high", "zh": "效质比 95% 上限"},
    "gpu_energy_prefill_j_mean": {"en": "prefill GPU J", "zh": "预填充 GPU 能耗 J"},
    "gpu_energy_decode_j_mean": {"en": "decode GPU J", "zh": "解码 GPU 能耗 J"},
    "accuracy": {"en": "accuracy", "zh": "准确率"},
    "accuracy_ci95_low": {"en": "accuracy 95% low (Wilson)", "zh": "准确率 95% 下限（Wilson）"},
    "accuracy_ci95_high": {"en": "accuracy 95% high (Wilson)", "zh": "准确率 95% 上限（Wilson）"},
    "accuracy_strict": {"en": "accuracy (strict)", "zh": "准确率（严格）"},
    "j_per_item": {"en": "J per item", "zh": "每题能耗 J"},
    "j_per_correct": {"en": "J per correct answer", "zh": "每个正确答案能耗 J"},
    "k": {"en": "k (samples/item)", "zh": "k（每题样本数）"},
    "pass_at_k": {"en": "pass@k", "zh": "pass@k"},
}


def t(key: str, lang: str, **fmt) -> str:
    text = _TEXT[key].get(lang) or _TEXT[key]["en"]
    if key == "basis_def":  # every registered quality basis, from the column registry
        fmt = {"bases": COLS.bases_text(lang), **fmt}
    return text.format(**fmt) if fmt else text


def label(column: str, lang: str) -> str:
    """A column's heading: this module's table, else the column registry's label (``<metric>_mean``:
    the metric's label, as compare's per-row means), else the name itself."""
    entry = _LABELS.get(column, {})
    found = entry.get(lang) or entry.get("en") or COLS.label(column, lang)
    if found is None and column.endswith("_mean"):
        found = COLS.label(column[:-len("_mean")], lang)
    return found or column


def check(lang: str) -> str:
    if lang not in LANGS:
        raise ValueError(f"report language must be one of {', '.join(LANGS)}, got {lang!r}; fix --report-lang")
    return lang


def lang_from_env() -> str:
    """'zh' for a Chinese locale, else 'en'."""
    for var in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(var)
        if value:
            return "zh" if value.lower().startswith("zh") else "en"
    try:
        name = locale.getlocale()[0] or ""
    except ValueError:
        name = ""
    return "zh" if name.lower().startswith(("zh", "chinese")) else "en"
