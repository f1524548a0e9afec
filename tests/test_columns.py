"""The column registry (analyzer/columns.py): results.csv's header is exactly today's (the seed's
columns first), and stats.csv, the report, compare, the labels and the scorers are generated from it."""
from __future__ import annotations

from pathlib import Path

import pytest

from analyzer import columns as COLS
from analyzer import compare, i18n, pipeline, report, stream, tables
from analyzer.quality import scorers
from analyzer.quality_call import QUALITY_COLUMNS
from shared.recording import read_recording
from tests import synth as S

DATA = Path(__file__).resolve().parent / "data"
# registry columns added after the header was frozen (issue 23's suites); they come after the old ones
NEW_SINCE_FROZEN = ("suite", "item_id", "correct", "correct_strict", "extracted_answer", "seed",
                    # issue 20's load sweeps
                    "sweep", "sweep_level", "start_lag_ms", "start_blocked", "start_late", "level_concurrency",
                    "level_rate_rps", "slo_ok", "latency_outlier", "latency_vs_twins")
# stats.csv's metrics before the registry, in their order (rows of stats.csv come in this order)
STAT_METRICS_BEFORE = (
    "latency_s", "first_token_s", "first_thinking_s", "first_chunk_s", "toks_per_s", "client_toks_per_s",
    "e2e_toks_per_s", "output_tokens", "gpu_energy_j", "gpu_energy_net_j", "gpu_energy_uncertainty_j", "j_per_token",
    "tokens_per_j", "gpu_mem_peak_mb", "gpu_util_avg", "gpu_temp_peak_c", "gpu_power_avg_w", "gpu_sm_clock_avg_mhz",
    "gpu_coverage", "cpu_util_avg", "cpu_energy_j_approx", "cpu_energy_j_rapl", "cpu_energy_j", "host_mem_peak_mib",
    "total_energy_j", "quality_score", "bartscore", "bartscore_f", "distinct_2", "quality_per_j", "j_per_quality",
    "chrf", "rouge_l", "quality_per_kj", "ttft_ms", "tpot_ms", "e2el_ms", "gpu_energy_prefill_j", "gpu_energy_decode_j",
    "j_per_prompt_token", "j_per_output_token", "cpu_energy_j_server", "host_cpu_other_pct")


def two_gpu_analysis(tmp_path):
    spec = S.tiny_spec()
    spec.gpus = [S.Gpu(S.constant(100.0)), S.Gpu(S.constant(50.0), uuid="GPU-x")]
    bd = S.write_batch(tmp_path / "b", spec)
    _, items, problem = read_recording(bd.stream)

    def scorer(reqs, opts, progress=False):
        return {r["rid"]: {"quality_score": 0.5, "quality_basis": "chrf", "extra_metric": 1.0} for r in reqs}
    return pipeline.analyze(stream.build(items), pipeline.Options(assess=scorer), recording_problem=problem)


def test_results_header_is_unchanged(tmp_path):
    """The header of a 2-GPU batch with an extra quality column, frozen before the registry existed."""
    a = two_gpu_analysis(tmp_path)
    frozen = (DATA / "results_header_2gpu.csv").read_text(encoding="utf-8").strip().split(",")
    header = tables.csv_text(a.columns, []).strip().split(",")
    # every column of the frozen header, in its order; what is new is a declared registry column
    assert [c for c in header if c in frozen] == frozen
    assert set(NEW_SINCE_FROZEN) <= set(header) and set(header) - set(frozen) <= set(COLS.RESULTS)
    assert header.index("suite") > header.index("max_tokens")  # new ones after the frozen registry columns
    assert tuple(a.columns[:11]) == ("timestamp", "model", "task", "load", "run", "latency_s", "toks_per_s",
                                     "gpu_mem_peak_mb", "gpu_util_avg", "gpu_energy_j", "bartscore")


def test_gpu_columns_combine_by_their_rule(tmp_path):
    a = two_gpu_analysis(tmp_path)
    row = next(r for r in a.results if r["status"] == "ok")
    assert row["gpu_energy_j"] == pytest.approx(row["gpu0_energy_j"] + row["gpu1_energy_j"])
    assert row["gpu_util_avg"] == pytest.approx((row["gpu0_util_avg_pct"] + row["gpu1_util_avg_pct"]) / 2)
    assert row["gpu_temp_peak_c"] == max(row["gpu0_temp_peak_c"], row["gpu1_temp_peak_c"])
    assert row["gpu_coverage"] == min(row["gpu0_coverage"], row["gpu1_coverage"])
    assert isinstance(row["gpu_seq_gaps"], int) and row["gpu_idle_w"] is None  # no --idle-baseline


def test_outputs_are_generated_from_the_registry():
    assert pipeline.MAIN_COLUMNS == COLS.RESULTS and tables.STAT_METRICS == STAT_METRICS_BEFORE
    assert QUALITY_COLUMNS[0] == "quality_score" and "quality_basis" in QUALITY_COLUMNS and "correct" in QUALITY_COLUMNS
    assert report.RESULT_COLUMNS == ("model", "task", "load", "text_lang", "run", "status", "latency_s",
                                     "first_token_s", "toks_per_s", "gpu_energy_j", "gpu_energy_method",
                                     "gpu_coverage", "cpu_energy_j", "total_energy_j", "quality_score",
                                     "quality_basis", "quality_per_kj", "j_per_quality", "latency_outlier")
    assert compare.MEAN_METRICS == ("quality_per_kj", "quality_score", "total_energy_j", "gpu_energy_j", "j_per_token",
                                    "first_token_s", "toks_per_s", "latency_s")
    assert "quality_score_ci95_low" in compare.LEADERBOARD_COLUMNS and "latency_s_mean" in compare.LEADERBOARD_COLUMNS
    assert tables.metric_range("chrf") == (0.0, 100.0) and tables.metric_range("not_a_column") == (0.0, None)


def test_a_new_column_is_one_line(monkeypatch):
    """Declared once, it reaches results, stats, the report's labels and compare."""
    col = COLS.Col("watts_per_thought", unit="W", en="W per thought", zh="每想法瓦", stats=99, compare=99)
    reg = COLS.REGISTRY + (col,)
    monkeypatch.setattr(COLS, "REGISTRY", reg)
    monkeypatch.setattr(COLS, "BY_NAME", {c.name: c for c in reg})
    assert COLS._ordered("stats")[-1] == "watts_per_thought" and COLS._ordered("compare")[-1] == "watts_per_thought"
    assert i18n.label("watts_per_thought", "zh") == "每想法瓦" and i18n.label("watts_per_thought_mean", "en") == "W per thought"
    assert col.unit_of == "W" and COLS.Col("x_ms").unit_of == "ms"


def test_labels_say_gpu_only_and_name_figures_apart():
    assert i18n.label("j_per_token", "en") == "GPU J/token" and i18n.label("j_per_token_mean", "en") == "GPU J/token"
    assert i18n.label("quality_per_kj_mean", "en") != i18n.label("group_quality_per_kj", "en")
    assert i18n.label("run_to_run_std", "zh") != i18n.label("std", "zh")


def test_every_basis_has_a_scorer_and_a_definition():
    assert set(scorers.SCORERS) == set(COLS.BASIS_BY_NAME)
    for lang in ("en", "zh"):
        text = i18n.t("basis_def", lang)
        assert all(b in text for b in COLS.BASIS_BY_NAME)
    with pytest.raises(ValueError, match="declare it there first"):
        scorers.register("vibes")


def test_combine_rules():
    assert COLS.combine("sum", [1.0, None, 2.0]) == 3.0 and COLS.combine("sum", [None]) is None
    assert COLS.combine("join", ["b", "a", "b", None]) == "a,b" and COLS.combine("any", [False, None]) is False
    assert COLS.combine("count", [1, 2]) == 3 and isinstance(COLS.combine("count", [1, 2]), int)
    with pytest.raises(ValueError):
        COLS.combine("median", [1])
