"""The report's words in English and Chinese (report.md and report.html; CSV column names never change).

``lang_from_env()`` picks the language when the user passed none: ``zh`` when the locale is Chinese
(LC_ALL / LC_MESSAGES / LANG, else the OS locale), otherwise ``en``.
"""
from __future__ import annotations

import locale
import os

from analyzer import columns as COLS

LANGS = ("en", "zh")
LANG_CHOICES = LANGS + ("both", "auto")  # auto: the old default, now the same as both

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
    "p_queueing": {
        "en": "QUEUEING: {model} at {sweep} {level}: median TTFT {ttft} ms against {base} ms at {base_level}: requests "
              "wait for a free slot in the server (its parallelism is below this level; Ollama serves "
              "OLLAMA_NUM_PARALLEL at once), so TTFT and goodput at this level measure the queue",
        "zh": "排队：{model} 在{sweep} {level} 下 TTFT 中位数为 {ttft} ms，而在{sweep} {base_level} 下为 {base} ms：请求在等待服务器的"
              "空闲槽位（其并行度低于此级别；Ollama 同时服务 OLLAMA_NUM_PARALLEL 个请求），因此此级别的 TTFT 和达标吞吐"
              "测得的是排队"},
    "n_level_window": {
        "en": "load_curve.csv: each level's energy is its whole window's (first start to last end, idle gaps between "
              "requests included); gpu_energy_split_j beside it sums the per-request split (gaps excluded)",
        "zh": "load_curve.csv：每个级别的能耗取其完整时间窗（从首个请求开始到最后一个请求结束，含请求之间的空闲间隙）；"
              "旁边的 gpu_energy_split_j 为逐请求拆分之和（不含间隙）"},
    "sweep_concurrency": {"en": "concurrency", "zh": "并发"},
    "sweep_rate": {"en": "rate", "zh": "速率"},
    "tip_goodput": {"en": "goodput", "zh": "达标比例"},
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
    "spans_merged": {"en": "{n} requests' {kind} over {a}–{b} s, {pct} % of that time (too many to draw apart: "
                           "shaded by that share)",
                     "zh": "{n} 个请求的{kind}，{a}–{b} s，占该时段 {pct} %（过多，合并绘制：按该比例着色）"},
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
    "html_note": {"en": "The same report with interactive plots: {file}.",
                  "zh": "含交互图表的同一报告：{file}。"},
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
    "c_split": {"en": "task {task}, model {model}: measured on {n} GPU set(s) ({gpus}) with {nb} quality basis/bases "
                      "({bases}); shown as separate rows, never pooled",
                "zh": "任务 {task}，模型 {model}：在 {n} 组 GPU（{gpus}）上测量，质量依据 {nb} 种（{bases}）；分行显示，从不合并"},
    "c_simulated": {"en": " (simulated)", "zh": "（模拟）"},
    "c_gpu": {"en": "{host} / {gpu}{sim}", "zh": "{host} / {gpu}{sim}"},
    "c_simulated_gpu": {"en": " (simulated GPU)", "zh": "（模拟 GPU）"},
    "c_apart": {"en": "task {task}{basis}{sim}{level}: rows ran {n} different case sets or max tokens, so they are "
                      "ranked apart, never against each other: {which}",
                "zh": "任务 {task}{basis}{sim}{level}：各行运行了 {n} 种不同的用例集或最大 token 数，因此分开排名，从不相互比较：{which}"},
    "c_at_level": {"en": " at {sweep} {level}", "zh": "（{sweep} {level}）"},
    "c_levels": {"en": "task {task}, model {model}: {n} load levels ({which}); each level is a row of its own, ranked "
                       "only against rows at the same level, never pooled with the others",
                 "zh": "任务 {task}，模型 {model}：{n} 个负载级别（{which}）；每个级别单独成行，只与同一级别的行一起排名，从不与其他级别合并"},
    "c_set": {"en": "cases {cases}, max_tokens {max_tokens}: {models}", "zh": "用例集 {cases}，max_tokens {max_tokens}：{models}"},
    "c_pooled": {"en": "task {task}, model {model} on {host} / {gpu}: pooled from {n} batches ({batches}), same GPU "
                       "and quality basis{mixed}",
                 "zh": "任务 {task}，模型 {model}，{host} / {gpu}：合并自 {n} 个批次（{batches}），GPU 与质量依据相同{mixed}"},
    "c_pooled_mixed": {"en": ", but different max tokens ({max_tokens}): its means mix answer lengths, and it is ranked "
                             "only against rows with the same mix",
                       "zh": "，但最大 token 数不同（{max_tokens}）：其均值混合了不同的回答长度，只与相同组合的行一起排名"},
    "c_outliers": {"en": "{n} request(s) in {rows} row(s) took more than 3× the latency of the same case's other runs "
                         "(n_outliers; results.csv latency_outlier): {which}",
                   "zh": "{rows} 行中有 {n} 个请求的延迟超过同一用例其他轮次的 3 倍（n_outliers；results.csv 的 "
                         "latency_outlier）：{which}"},
    "c_unnamed": {"en": "batch {batch} was analysed before GPUs were named (host and GPU show as {unknown}): rerun "
                        "python -m analyzer --batch {path}",
                  "zh": "批次 {batch} 的分析早于 GPU 命名（主机和 GPU 显示为 {unknown}）：请重新运行 "
                        "python -m analyzer --batch {path}"},
    "c_no_quality": {"en": "batch {batch} has no quality scores, so no 效质比: analysed with --no-quality, or its "
                           "requests have nothing to be scored against (proxy traffic, tasks without a reference)",
                     "zh": "批次 {batch} 没有质量分，因此没有效质比：分析时用了 --no-quality，或其请求没有可对照评分的内容"
                           "（代理流量、没有参考答案的任务）"},
    # Notes: what the analysis did, said once; not problems (shown apart from them)
    "notes": {"en": "Analysis notes", "zh": "分析说明"},
    "n_clock_same_host": {"en": "{src}: same host as the collector (same boot id), one clock, no mapping",
                          "zh": "{src}：与采集器在同一主机（同一 boot id），同一时钟，无需映射"},
    "n_clock_mapped": {"en": "{src}: clock mapped into the collector's ({method}): offset {offset} ms (source − "
                             "collector), drift {drift} ppm, ± {unc} ms from {probes} probe(s), shortest round trip "
                             "{rtt} ms",
                       "zh": "{src}：时钟已映射到采集器的时钟（{method}）：偏移 {offset} ms（源 − 采集器），漂移 {drift} ppm，"
                             "不确定度 ± {unc} ms，来自 {probes} 次探测，最短往返 {rtt} ms"},
    "n_no_quality": {"en": "quality step skipped (--no-quality): no quality scores, so no 效质比; rerun "
                           "python -m analyzer --batch DIR without --no-quality",
                     "zh": "已跳过质量评估（--no-quality）：没有质量分，因此没有效质比；去掉 --no-quality 重新运行 "
                           "python -m analyzer --batch DIR"},
    "n_no_bart": {"en": "BARTScore off (--no-bart): QA and summary answers are scored by chrF / 100 "
                        "(quality_basis = chrf)",
                  "zh": "已关闭 BARTScore（--no-bart）：问答和摘要用 chrF / 100 评分（quality_basis = chrf）"},
    "n_cpu_tdp": {"en": "cpu_energy_j_approx uses a CPU TDP of {w} W ({source})",
                  "zh": "cpu_energy_j_approx 使用的 CPU TDP 为 {w} W（{source}）"},
    "src_flag": {"en": "--cpu-tdp-w", "zh": "--cpu-tdp-w"},
    "src_batch": {"en": "recorded by the collector: {how}", "zh": "采集器记录：{how}"},
    "src_default": {"en": "env CPU_TDP_W, else the default", "zh": "环境变量 CPU_TDP_W，否则默认值"},
    # Problems added for hand-written files and outliers
    "p_fallback": {
        "en": "FALLBACK: {file} was bad, so --use-default-on-error ran {instead} instead; fix the file and run "
              "a new batch to measure your own cases. Why: {why}",
        "zh": "已回退：{file} 有错误，--use-default-on-error 改用了{instead}；请修复该文件并重新运行批次以测量你自己的用例。"
              "原因：{why}"},
    "fb_builtin": {"en": "the built-in task set", "zh": "内置任务集"},
    "fb_defaults": {"en": "the defaults for its settings", "zh": "其设置的默认值"},
    "p_outliers": {
        "en": "{n} request(s) took more than {k}× the latency of the same case's other runs (column latency_outlier; "
              "rule in docs/analyzer.md): {which}",
        "zh": "{n} 个请求的延迟超过同一用例其他轮次的 {k} 倍（列 latency_outlier；规则见 docs/analyzer.md）：{which}"},
    "p_bart_unavailable": {
        "en": "BARTScore could not run, so {n} QA/summary request(s) are scored by chrF / 100 (quality_basis = "
              "chrf). Reason and fix: {why}",
        "zh": "BARTScore 无法运行（检查点 {checkpoints} 无法加载），因此 {n} 个问答/摘要请求改用 chrF / 100 评分"
              "（quality_basis = chrf）。修复：在有网络的机器上运行 python -m analyzer.quality.fetch_checkpoint 下载检查点，"
              "或用 python -m analyzer --no-bart 直接使用 chrF；英文原因见 results.csv 的 bartscore_error 列。"},
    "p_end_before_start": {"en": "request {rid}: req.end is stamped before req.start; treated as incomplete",
                           "zh": "请求 {rid}：req.end 的时间戳早于 req.start；按未完成处理"},
    "p_no_idle_samples": {"en": "idle baseline: no GPU power samples before the first request; net energy left empty",
                          "zh": "空闲基线：第一个请求之前没有 GPU 功率采样；净能耗留空"},
    "p_clock_short": {
        "en": "{n} request window(s) are shorter than {k} × the clock mapping's uncertainty (clock_short_window): "
              "their energy edges are doubtful: {which}",
        "zh": "{n} 个请求时间窗短于时钟映射不确定度的 {k} 倍（clock_short_window）：其能耗边界存疑：{which}"},
    "p_code_tests_skipped": {
        "en": "code tests skipped for {n} request(s), their quality_score counts the static checks only{suite}: {why}",
        "zh": "{n} 个请求的代码测试被跳过，其 quality_score 只计静态检查{suite}。原因（英文）：{why}"},
    "p_suite_no_score": {"en": " ({n} HumanEval item(s) have no score at all)",
                         "zh": "（其中 {n} 道 HumanEval 题目完全没有分数）"},
    "p_unknown_task": {
        "en": "task {task} is not a known task{hint}; known: {known} (and their aliases), {suite} items and {proxy} "
              "requests. Its answers get text statistics only (length, distinct-n, repetition): no quality_score, "
              "so no 效质比; chrF/ROUGE-L columns are filled where the case has a reference_text",
        "zh": "任务 {task} 不是已知任务{hint}；已知任务：{known}（及其别名）、{suite} 题目和 {proxy} 请求。其回答只做文本统计"
              "（长度、distinct-n、重复率）：没有 quality_score，因此没有效质比；用例带 reference_text 时填写 chrF/ROUGE-L 列"},
    "p_did_you_mean": {"en": " (did you mean {name}?)", "zh": "（是否想写 {name}？）"},
    "p_unsafe_code_tests": {
        "en": "code tests of {n} request(s) ran WITHOUT a sandbox (unsafe opt-in): model-written code could read "
              "your files and use the network",
        "zh": "{n} 个请求的代码测试在没有沙箱的情况下运行（不安全的选项）：模型写的代码可能读取你的文件并访问网络"},
    "p_cpu_contention": {
        "en": "CPU contention: in {n} request(s) other processes used more than {pct} % of the CPU "
              "(host_cpu_other_pct); their cpu_energy_j_approx and timings include that load, cpu_energy_j_server "
              "does not: {which}",
        "zh": "CPU 争用：{n} 个请求期间其他进程占用超过 {pct} % 的 CPU（host_cpu_other_pct）；其 cpu_energy_j_approx "
              "和计时包含这部分负载，cpu_energy_j_server 不包含：{which}"},
    "p_incomplete_requests": {"en": "{n} request(s) started but never ended (listed as incomplete): {which}",
                              "zh": "{n} 个请求已开始但未结束（列为未完成）：{which}"},
    "p_mixed_bases": {
        "en": "task {task}: quality_score comes from {n} bases ({which} requests); stats and the Pareto front are "
              "given per basis, never mixed",
        "zh": "任务 {task}：quality_score 来自 {n} 种依据（{which} 个请求）；统计与帕累托前沿按依据分别给出，从不混合"},
    "p_gpus_no_server_host": {
        "en": "GPU energy counts every GPU of {n} hosts ({hosts}): none is on the LLM server's host {server} as the "
              "telemetry names hosts; pick them with --server-gpus HOST[,HOST/UUID...]",
        "zh": "GPU 能耗计入了 {n} 台主机（{hosts}）的全部 GPU：按遥测的主机名，没有一块在 LLM 服务器所在主机 {server} 上；"
              "请用 --server-gpus HOST[,HOST/UUID...] 指定"},
    "p_server_gpus_no_match": {"en": "--server-gpus {spec} matches no recorded GPU (recorded: {recorded}); every GPU "
                                     "counted",
                               "zh": "--server-gpus {spec} 没有匹配到任何已记录的 GPU（已记录：{recorded}）；计入全部 GPU"},
    "n_gpus_counted": {"en": "GPU energy counts {n} GPU(s) ({which}, {why}); not counted: {left}",
                       "zh": "GPU 能耗计入 {n} 块 GPU（{which}，{why}）；未计入：{left}"},
    "why_server_host": {"en": "the LLM server's host {server}", "zh": "LLM 服务器所在主机 {server}"},
    "p_quality_failed": {"en": "quality step failed ({error}); quality columns left empty",
                         "zh": "质量评估失败（{error}）；质量列留空"},
    "p_clock_unprobed": {
        "en": "{src}: no clock probe answered, so its clock is taken as the collector's (right only on the same "
              "host); start that daemon with a clock endpoint (python -m telemetry, default telemetry port + 2)",
        "zh": "{src}：没有时钟探测应答，因此按采集器的时钟处理（仅在同一主机上正确）；请以带时钟端点的方式启动该守护进程"
              "（python -m telemetry，默认端口为遥测端口 + 2）"},
    "p_recording": {"en": "recording: {what}", "zh": "录制文件：{what}"},
    "p_server_not_seen": {
        "en": "{n} request(s) have no server CPU figures (cpu_server_basis = server_not_seen): their window opened "
              "before the telemetry daemon found the LLM server's process, or closed after it last saw it: {which}",
        "zh": "{n} 个请求没有服务器 CPU 数据（cpu_server_basis = server_not_seen）：其时间窗开始于遥测守护进程找到 LLM "
              "服务器进程之前，或结束于最后一次看到它之后：{which}"},
    "p_have_planned": {"en": "{ok} of {planned} planned request(s) have a successful result",
                       "zh": "计划的 {planned} 个请求中有 {ok} 个成功"},
    "p_have_ok": {"en": "{ok} request(s) ok", "zh": "{ok} 个请求成功"},
    "p_resume_hint": {"en": "; `{command}` runs what is missing", "zh": "；运行 `{command}` 可补齐缺少的请求"},
    "p_partial_cut": {"en": "PARTIAL: the recording ends without batch.end (the collector was killed?); {have}{resume}",
                      "zh": "不完整：录制文件没有 batch.end（采集器被强行终止？）；{have}{resume}"},
    "p_partial_interrupted": {"en": "PARTIAL: the batch was interrupted; {have}{resume}",
                              "zh": "不完整：批次被中断；{have}{resume}"},
    "p_incomplete": {"en": "INCOMPLETE: {have} (failed ones are in results.csv with status failed; skipped ones "
                           "never ran, batch.end counts them){resume}",
                     "zh": "未全部完成：{have}（失败的请求在 results.csv 中状态为 failed；被跳过的请求从未运行，由 batch.end "
                           "计数）{resume}"},
    "p_model_mismatch": {"en": "MODEL MISMATCH: requests for {asked} were answered by a server that reports {got} "
                               "(column served_model)",
                         "zh": "模型不符：发给 {asked} 的请求由自报为 {got} 的服务器作答（列 served_model）"},
    "yes": {"en": "true", "zh": "是"},
    "no": {"en": "false", "zh": "否"},
    "suites": {"en": "Benchmark suites", "zh": "基准测试"},
    "suite": {"en": "Suite", "zh": "基准"},
    "suite_protocol": {
        "en": "Protocol: zero-shot generative (the item as a chat instruction, temperature 0 unless set; with "
              "several runs each run is a sample with its own seed, for pass@k; the answer ends at the suite's stop "
              "sequences: GSM8K at a new \"Question:\", multiple choice where a new item begins, HumanEval as a raw "
              "completion at the Codex paper's \"\\ndef \", \"\\nclass \", \"\\nif __name__\", \"\\nprint(\", \"\\n#\" but "
              "as a chat answer only at end-of-turn text, all at end-of-turn text such as </s> and <|im_end|>; "
              "config.json suites lists each suite's, with --stop/--no-stop if the user replaced them), scored from the generated text as the "
              "benchmark scores it: HumanEval by its own check() in the sandbox, GSM8K by exact match of the number, "
              "multiple choice by the chosen letter. This is NOT the 5-shot log-likelihood protocol behind most "
              "published MMLU/C-Eval/CMMLU numbers. Accuracy has a Wilson 95% interval; pass@k is the unbiased "
              "estimator of the HumanEval paper; J per item = mean energy per request (GPU + CPU), J per correct "
              "answer = all energy ÷ correct answers; group 效质比 here is accuracy per kJ.",
        "zh": "协议：零样本生成式（题目作为聊天指令，除非另行设置否则温度为 0；多轮时每轮为一个使用各自随机种子的样本，用于 pass@k；"
              "回答在该基准的停止序列处结束：GSM8K 在新的 \"Question:\" 处，选择题在新题目开始处，HumanEval 作为原始补全时在 Codex "
              "论文的 \"\\ndef \"、\"\\nclass \"、\"\\nif __name__\"、\"\\nprint(\"、\"\\n#\" 处、作为聊天回答时只在轮次结束标记处，"
              "均在 </s>、<|im_end|> 等轮次结束标记处；config.json 的 \"suites\" 列出每个基准的停止序列，以及用户是否用 --stop/--no-stop 替换），"
              "按各基准自身的方式对生成文本评分：HumanEval 在沙箱中运行题目自带的 check()，GSM8K 精确匹配数字，选择题比较所选字母。"
              "这不是多数已发表 MMLU/C-Eval/CMMLU 成绩所用的 5-shot 对数似然协议。准确率附 Wilson 95% 区间；pass@k 为 HumanEval "
              "论文的无偏估计；每题能耗 = 每请求平均能耗（GPU + CPU），每个正确答案能耗 = 总能耗 ÷ 正确答案数；此处的组效质比即每千焦准确率。"},
    "like_with_like": {"en": "cases {cases} ({n} case(s)), max tokens {max_tokens}",
                       "zh": "用例集 {cases}（{n} 个用例），最大 token 数 {max_tokens}"},
}

# Words of ours that appear as cell values (column -> {value: key in _TEXT-like table}).
_VALUES: dict[str, dict[str, str]] = {
    "n too small": {"zh": "样本太少"}, "clipped": {"zh": "已截断"},
    "ok": {"zh": "成功"}, "failed": {"zh": "失败"}, "incomplete": {"zh": "未完成"},
    "concurrency": {"zh": "并发"}, "rate": {"zh": "速率"},  # a sweep's kind (the load-level table)
}
VALUE_COLUMNS = ("ci95_note", "status", "sweep")


class Msg(str):
    """A catalogue message that is also its English text: code that treats it as a str keeps working,
    and a report in another language renders ``key`` with ``fmt`` (values may be Msg too)."""

    key: str
    fmt: dict

    def __new__(cls, key: str, **fmt) -> "Msg":
        obj = super().__new__(cls, t(key, "en", **{k: render(v, "en") for k, v in fmt.items()}))
        obj.key, obj.fmt = key, fmt
        return obj

    def __reduce__(self):  # copy and pickle (worker processes) rebuild it from key and fmt
        return _msg, (self.key, self.fmt)


def _msg(key: str, fmt: dict) -> Msg:
    return Msg(key, **fmt)


def render(text, lang: str) -> str:
    """A problem or note in ``lang``: a Msg through the catalogue (a list: its items joined by "; "),
    any other text as it is."""
    if isinstance(text, (list, tuple)):
        return "; ".join(render(x, lang) for x in text)
    if isinstance(text, Msg):
        return t(text.key, lang, **{k: render(v, lang) for k, v in text.fmt.items()})
    return text if isinstance(text, str) else str(text)


def cell_value(column: str, value, lang: str):
    """A cell's value as the reader sees it: true/false and our own words translated, data as it is."""
    if isinstance(value, bool):
        return t("yes" if value else "no", lang)
    if column in VALUE_COLUMNS and isinstance(value, str) and value in _VALUES:
        return _VALUES[value].get(lang) or value
    return value

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
    "n_outliers": {"en": "outliers", "zh": "离群请求"},
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
    # the load-level table (load_curve.csv); English keeps the CSV names
    "request_throughput_rps": {"zh": "请求/s"}, "output_tokens_per_s": {"zh": "输出 token/s"},
    "ttft_ms_median": {"zh": "TTFT 中位数 ms"}, "tpot_ms_median": {"zh": "每输出 token 时间中位数 ms"},
    "e2el_ms_p99": {"zh": "端到端延迟 p99 ms"}, "gpu_power_avg_w": {"zh": "GPU 平均功率 W"},
    "j_per_token_split": {"zh": "每 token 焦耳（逐请求拆分）"}, "goodput_share": {"zh": "达标比例"},
    "goodput_rps": {"zh": "达标请求/s"}, "j_per_good_request": {"zh": "每个达标请求焦耳"}, "queueing": {"zh": "排队"},
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


def check_choice(value: str) -> str:
    """A --report-lang value: en, zh or both (auto -> both)."""
    if value == "auto":
        return "both"
    if value == "both":
        return value
    return check(value)


def langs_of(choice: str) -> tuple[str, ...]:
    return LANGS if choice in ("both", "auto") else (check(choice),)


def suffixed(name: str, lang: str) -> str:
    """report.html -> report.zh.html for Chinese; English keeps the seed's names."""
    stem, dot, ext = name.rpartition(".")
    return name if lang == "en" else f"{stem}.{lang}{dot}{ext}"


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
