"""The one registry of the analyzer's per-request columns (pure data).

Each column is declared once: its name, unit, how several GPUs combine into it, its English and
Chinese labels, and where it goes: results.csv (always, in registry order), stats.csv (``stats``:
summarised per model × task × load), the report's results table (``report``: position) and the
compare leaderboard (``compare``: position; ``compare_ci`` adds the 95 % interval). results.csv,
stats.csv, report.md/html, compare and the quality columns are generated from it, so a new metric is
one ``Col(...)`` line here (and the code that computes its value).

The order of REGISTRY is results.csv's column order: the seed's columns first (users rely on them),
new columns at the end. tests/test_columns.py holds results.csv's header against a frozen copy.
"""
from __future__ import annotations

from dataclasses import dataclass

# How the per-GPU values of a request combine into the row's value (``gpu`` = (per-GPU field, rule)).
GPU_RULES = ("sum", "mean", "max", "min", "any", "join", "count")
# Suffix → unit, for columns that do not state one.
_UNITS = (("_ms", "ms"), ("_s", "s"), ("_j", "J"), ("_w", "W"), ("_mib", "MiB"), ("_mb", "MiB"), ("_pct", "%"),
          ("_mhz", "MHz"), ("_hz", "Hz"), ("_c", "°C"))


@dataclass(frozen=True)
class Col:
    name: str
    unit: str | None = None          # None: from the name's suffix (see unit_of)
    en: str | None = None            # report heading; None = the name itself
    zh: str | None = None
    gpu: tuple[str, str] | None = None  # (per-GPU field, rule in GPU_RULES); ``per_gpu``: also gpu<k>_<field>
    per_gpu: bool = False
    source: str = "pipeline"         # "pipeline" (analyzer) or "quality" (returned by analyzer.quality.assess)
    stats: int | None = None         # position among stats.csv's metrics (None: not summarised)
    basis: bool = False              # its value depends on quality_basis: summarised per basis, never mixed
    range: tuple[float | None, float | None] = (0.0, None)  # values it can take (stats intervals are clipped)
    report: int | None = None        # position in the report's results table
    compare: int | None = None       # position among compare's averaged metrics
    compare_optional: bool = False   # in compare only when some batch has it
    compare_ci: bool = False         # compare gives its 95 % interval

    @property
    def unit_of(self) -> str:
        if self.unit is not None:
            return self.unit
        return next((u for suffix, u in _UNITS if self.name.endswith(suffix)), "")


def _q(name: str, **kw) -> Col:
    return Col(name, source="quality", **kw)


REGISTRY: tuple[Col, ...] = (
    # the seed's columns, in the seed's order
    Col("timestamp", unit="", zh="时间"),
    Col("model", unit="", zh="模型", report=1),
    Col("task", unit="", zh="任务", report=2),
    Col("load", unit="", zh="负载", report=3),
    Col("run", unit="", zh="轮次", report=5),
    Col("latency_s", en="latency (s)", zh="延迟（s）", stats=1, report=7, compare=10),
    Col("toks_per_s", unit="tok/s", en="tok/s", zh="tok/s", stats=5, report=9, compare=9),
    Col("gpu_mem_peak_mb", gpu=("mem_peak_mib", "sum"), per_gpu=True, stats=14),  # the seed's name; holds MiB
    Col("gpu_util_avg", unit="%", gpu=("util_avg_pct", "mean"), per_gpu=True, stats=15, range=(0.0, 100.0)),
    Col("gpu_energy_j", en="GPU J", zh="GPU 能耗 J", gpu=("energy_j", "sum"), per_gpu=True, stats=9, report=10,
        compare=4),
    Col("bartscore", source="quality", stats=27, range=(None, 0.0)),
    # the analyzer's own columns
    Col("rid", unit="", zh="请求 id"),
    Col("status", unit="", zh="状态", report=6),
    Col("ok", unit=""),
    Col("error", unit="", zh="错误"),
    Col("error_kind", unit=""),
    Col("case", unit=""),
    Col("cold", unit=""),
    Col("first_token_s", en="TTFT (s)", zh="首 token（s）", stats=2, report=8, compare=8),
    Col("first_thinking_s", stats=3),
    Col("first_chunk_s", stats=4),
    Col("output_tokens", unit="tokens", stats=8),
    Col("toks_per_s_method", unit=""),
    Col("client_toks_per_s", unit="tok/s", stats=6),
    Col("e2e_toks_per_s", unit="tok/s", stats=7),
    Col("prompt_tokens", unit="tokens"),
    Col("prefill_toks_per_s", unit="tok/s"),
    Col("window_s"),
    Col("effective_window_s"),
    Col("concurrency_max", unit=""),
    Col("gpu_count", unit=""),
    Col("gpu_simulated", unit=""),
    Col("gpu_power_kind", unit=""),
    Col("gpu_energy_method", unit="", en="GPU energy method", zh="GPU 能耗方法", gpu=("energy_method", "join"),
        per_gpu=True, report=11),
    Col("gpu_energy_counter_j", gpu=("energy_counter_j", "sum")),
    Col("gpu_energy_power_j", gpu=("energy_power_j", "sum")),
    Col("gpu_energy_uncertainty_j", gpu=("energy_uncertainty_j", "sum"), per_gpu=True, stats=11),
    Col("gpu_energy_uncertainty_pct"),
    Col("gpu_short_window", unit="", gpu=("short_window", "any")),
    Col("gpu_coverage", unit="", en="GPU coverage", zh="GPU 覆盖率", gpu=("coverage", "min"), per_gpu=True, stats=19,
        range=(0.0, 1.0), report=12),
    Col("gpu_seq_gaps", unit="", zh="序号缺口", gpu=("seq_gaps", "count"), per_gpu=True),
    Col("gpu_samples", unit="", gpu=("samples", "count")),
    Col("gpu_idle_w", gpu=("idle_w", "sum")),
    Col("gpu_energy_net_j", gpu=("energy_net_j", "sum"), stats=10, range=(None, None)),
    Col("gpu_power_avg_w", gpu=("power_avg_w", "sum"), per_gpu=True, stats=17),
    Col("gpu_power_peak_w", gpu=("power_peak_w", "sum")),
    Col("gpu_temp_peak_c", gpu=("temp_peak_c", "max"), per_gpu=True, stats=16),
    Col("gpu_sm_clock_avg_mhz", gpu=("sm_clock_avg_mhz", "mean"), per_gpu=True, stats=18),
    Col("j_per_token", unit="J/token", en="GPU J/token", zh="GPU 每 token 焦耳", stats=12, compare=5),
    Col("tokens_per_j", unit="token/J", en="tokens per GPU J", zh="每 GPU 焦耳 token 数", stats=13),
    Col("gpu_energy_prefill_j", gpu=("energy_prefill_j", "sum"), per_gpu=True, stats=38, compare=6,
        compare_optional=True),
    Col("gpu_energy_prefill_uncertainty_j", gpu=("energy_prefill_uncertainty_j", "sum")),
    Col("gpu_prefill_short", unit="", gpu=("prefill_short", "any")),
    Col("gpu_energy_decode_j", gpu=("energy_decode_j", "sum"), per_gpu=True, stats=39, compare=7,
        compare_optional=True),
    Col("gpu_energy_decode_uncertainty_j", gpu=("energy_decode_uncertainty_j", "sum")),
    Col("gpu_decode_short", unit="", gpu=("decode_short", "any")),
    Col("j_per_prompt_token", unit="J/token", stats=40),
    Col("j_per_output_token", unit="J/token", stats=41),
    Col("gpu_sampling_hz", gpu=("sampling_hz", "min")),
    Col("gpu_counter_refresh_ms"),  # 1000 × the slowest GPU's counter refresh (s): computed in the pipeline
    Col("gpu_counter_refresh_fit", unit="", gpu=("counter_refresh_fit", "join"), per_gpu=True),
    Col("cpu_util_avg", unit="%", stats=20, range=(0.0, 100.0)),
    Col("cpu_tdp_w"),
    Col("cpu_energy_j_approx", stats=21),
    Col("cpu_energy_j_rapl", stats=22),
    Col("cpu_energy_j", en="CPU J", zh="CPU 能耗 J", stats=23, report=13),
    Col("cpu_energy_basis", unit=""),
    Col("cpu_coverage", unit=""),
    Col("host_mem_peak_mib", stats=24),
    Col("total_energy_j", en="energy J", zh="总能耗 J", stats=25, report=14, compare=3, compare_ci=True),
    Col("energy_basis", unit=""),
    Col("cpu_energy_j_server", stats=42),
    Col("cpu_server_basis", unit=""),
    Col("cpu_server_share", unit=""),
    Col("server_cpu_s"),
    Col("host_cpu_other_pct", stats=43, range=(0.0, 100.0)),
    Col("ttft_ms", stats=35),
    Col("tpot_ms", stats=36),
    Col("e2el_ms", stats=37),
    Col("itl_ms_mean"),
    Col("itl_ms_max"),
    # returned by analyzer.quality.assess (docs/quality.md)
    _q("quality_score", unit="0..1", en="quality", zh="质量分", stats=26, basis=True, range=(0.0, 1.0), report=15,
       compare=2, compare_ci=True),
    _q("bartscore_p", range=(None, 0.0)),
    _q("bartscore_r", range=(None, 0.0)),
    _q("bartscore_f", stats=28, range=(None, 0.0)),
    _q("bartscore_model", unit=""),
    _q("bartscore_error", unit=""),
    _q("code_found", unit=""),
    _q("code_parses", unit=""),
    _q("code_symbols_ok", unit=""),
    _q("code_symbols_missing", unit=""),
    _q("code_mentions_complexity", unit=""),
    _q("code_tests_passed", unit=""),
    _q("code_tests_error", unit=""),
    _q("code_tests_sandbox", unit=""),
    _q("code_tests_skipped", unit=""),
    _q("len_chars", unit="chars"),
    _q("len_tokens", unit="tokens"),
    _q("distinct_1", unit="0..1", range=(0.0, 1.0)),
    _q("distinct_2", unit="0..1", stats=29, range=(0.0, 1.0)),
    _q("distinct_3", unit="0..1", range=(0.0, 1.0)),
    _q("repetition_rate", unit="0..1", range=(0.0, 1.0)),
    _q("text_lang", unit="", en="lang", zh="语言", report=4),
    _q("chrf", unit="0..100", en="chrF", zh="chrF", stats=32, range=(0.0, 100.0)),
    _q("rouge_l", unit="0..1", en="ROUGE-L", zh="ROUGE-L", stats=33, range=(0.0, 1.0)),
    _q("quality_basis", unit="", en="basis", zh="质量依据", report=16),
    # 效质比 and its inverse, per request (the group figures are stats.csv's group_* rows)
    Col("quality_per_j", unit="quality/J", stats=30, basis=True),
    Col("j_per_quality", unit="J/quality", en="J per quality point", zh="每质量分焦耳", stats=31, basis=True, report=18),
    Col("quality_error", unit=""),
    Col("quality_per_kj", unit="quality/kJ", en="效质比 (quality/kJ)", zh="效质比（质量/kJ）", stats=34, basis=True,
        report=17, compare=1, compare_ci=True),
    Col("prompt_cached_tokens", unit="tokens"),
    # what makes runs comparable (compare ranks only like with like)
    Col("case_hash", unit="", en="case hash", zh="用例哈希"),
    Col("max_tokens", unit="tokens", en="max tokens", zh="最大 token 数"),
    # benchmark suites: which suite and item, and the per-request verdict (pass@k is a group figure)
    Col("suite", unit="", en="suite", zh="基准"),
    Col("item_id", unit="", en="item", zh="题目"),
    _q("correct", unit="", en="correct", zh="正确"),
    _q("correct_strict", unit="", en="correct (strict)", zh="正确（严格）"),
    _q("extracted_answer", unit="", en="extracted answer", zh="提取的答案"),
    Col("seed", unit="", en="seed", zh="随机种子"),
    # load sweeps and open-loop arrivals (issue 20; empty outside them): the level, how the start kept its
    # schedule, the level's achieved load (load_curve.csv), and whether the request met the SLOs (--goodput)
    Col("sweep", unit="", en="sweep", zh="扫描类型"),
    Col("sweep_level", unit="", en="sweep level", zh="负载级别"),
    Col("start_lag_ms", en="start lag (ms)", zh="启动滞后（ms）"),
    Col("start_blocked", unit="", en="start blocked", zh="等待并发槽"),
    Col("start_late", unit="", en="start late", zh="启动延误"),
    Col("level_concurrency", unit="requests", en="level concurrency", zh="级别实际并发"),
    Col("level_rate_rps", unit="requests/s", en="level rate (req/s)", zh="级别实际速率（请求/s）"),
    Col("slo_ok", unit="", en="met SLOs", zh="满足 SLO"),
    # a run far slower than the same case's other runs (pipeline.mark_outliers; docs/analyzer.md)
    Col("latency_outlier", unit="", en="latency outlier", zh="延迟离群", report=19),
    Col("latency_vs_twins", unit="×", en="latency ÷ other runs'", zh="延迟 ÷ 同用例其他轮次"),
)

BY_NAME: dict[str, Col] = {c.name: c for c in REGISTRY}
if len(BY_NAME) != len(REGISTRY):  # a name declared twice would silently shadow the first
    raise RuntimeError("analyzer.columns: a column is declared twice")

SEED_COLUMNS = ("timestamp", "model", "task", "load", "run", "latency_s", "toks_per_s", "gpu_mem_peak_mb",
                "gpu_util_avg", "gpu_energy_j", "bartscore")


def _ordered(attr: str) -> tuple[str, ...]:
    return tuple(c.name for c in sorted((c for c in REGISTRY if getattr(c, attr) is not None),
                                        key=lambda c: getattr(c, attr)))


RESULTS = tuple(c.name for c in REGISTRY)
QUALITY = tuple(c.name for c in REGISTRY if c.source == "quality" and c.name != "bartscore")
STATS = _ordered("stats")
BASIS_METRICS = tuple(c.name for c in REGISTRY if c.basis)
REPORT = _ordered("report")
COMPARE = tuple(n for n in _ordered("compare") if not BY_NAME[n].compare_optional)
COMPARE_OPTIONAL = tuple(n for n in _ordered("compare") if BY_NAME[n].compare_optional)
COMPARE_CI = tuple(n for n in _ordered("compare") if BY_NAME[n].compare_ci)
# compare's leaderboard columns per metric, in order: the mean, then the 95 % interval where asked
COMPARE_COLUMNS = tuple(c for n in _ordered("compare")
                        for c in ((f"{n}_mean", f"{n}_ci95_low", f"{n}_ci95_high") if BY_NAME[n].compare_ci
                                  else (f"{n}_mean",)))
GPU_COMBINED = tuple(c for c in REGISTRY if c.gpu is not None)
PER_GPU = tuple(c.gpu[0] for c in REGISTRY if c.per_gpu and c.gpu)


def metric_range(name: str) -> tuple[float | None, float | None]:
    col = BY_NAME.get(name)
    return col.range if col is not None else (0.0, None)


def label(name: str, lang: str) -> str | None:
    """The registry's heading for a column in ``lang`` (None when it declares none)."""
    col = BY_NAME.get(name)
    if col is None:
        return None
    return (col.zh if lang == "zh" else None) or col.en


def combine(rule: str, values: list) -> object:
    """The row's value from the per-GPU values (None ones left out; None when none is left)."""
    vals = [v for v in values if v is not None]
    if rule == "join":
        return ",".join(sorted({str(v) for v in vals if v})) or None
    if not vals:
        return None
    if rule == "sum":
        return float(sum(vals))
    if rule == "count":
        return int(sum(vals))
    if rule == "mean":
        return sum(vals) / len(vals)
    if rule == "max":
        return max(vals)
    if rule == "min":
        return min(vals)
    if rule == "any":
        return bool(any(vals))
    raise ValueError(f"unknown GPU rule {rule!r}; use one of {', '.join(GPU_RULES)}")


# the ordering invariants the outputs rely on, checked once at import
for _c in REGISTRY:
    if _c.gpu is not None and _c.gpu[1] not in GPU_RULES:
        raise RuntimeError(f"analyzer.columns: {_c.name}: unknown GPU rule {_c.gpu[1]!r}")
if RESULTS[:len(SEED_COLUMNS)] != SEED_COLUMNS:
    raise RuntimeError("analyzer.columns: the seed's columns must come first, in the seed's order")


# ---------------------------------------------------------------- quality bases (the per-request scoring rules)

@dataclass(frozen=True)
class Basis:
    """One rule that gives quality_score (results.csv quality_basis); the scorer of the same name is
    registered in analyzer/quality/scorers.py. ``binary``: its score is 1 (right) or 0 (wrong)."""
    name: str
    en: str
    zh: str
    binary: bool = False


BASES: tuple[Basis, ...] = (
    Basis("bartscore", "exp(BARTScore F)", "exp(BARTScore F)"),
    Basis("chrf", "chrF / 100 (character n-grams against the reference, no model weights)",
          "chrF / 100（与参考答案的字符 n-gram 匹配，无需模型权重）"),
    Basis("code_checks", "share of code checks passed", "代码检查通过比例"),
    Basis("diversity", "distinct-2 and length", "distinct-2 与长度"),
    Basis("tests_passed", "1 when the HumanEval problem's own check() passes in the sandbox, else 0",
          "HumanEval 题目自带的 check() 在沙箱中通过为 1，否则为 0", binary=True),
    Basis("exact_match", "1 when the answer's number equals GSM8K's (flexible rule: the last number), else 0",
          "答案中的数字与 GSM8K 标准答案相等为 1（宽松规则：最后一个数字），否则为 0", binary=True),
    Basis("choice_match", "1 when the chosen letter is the right option, else 0 (no letter = wrong)",
          "所选字母为正确选项为 1，否则为 0（未给出字母按错误计）", binary=True),
)
BASIS_BY_NAME = {b.name: b for b in BASES}


def bases_text(lang: str) -> str:
    """'bartscore = …; chrf = …' for the report's definition of the quality basis."""
    return ("；" if lang == "zh" else "; ").join(f"{b.name} = {b.zh if lang == 'zh' else b.en}" for b in BASES)
