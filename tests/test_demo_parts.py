"""The demo's parts without the real model: the key-figures table (pure), the argument lists it
builds (pure), and its process handling on real subprocesses (own group, polite stop, then kill)."""
import subprocess
import sys
import textwrap
from pathlib import Path
import time

import psutil
import pytest

from demo import figures
from demo.plan import DEMO_MODEL, DemoSettings, collector_args, telemetry_args
from demo.procs import Child


def row(**kw):
    base = {"model": "m", "task": "qa", "load": "short", "status": "ok", "ok": "true", "latency_s": "1.0",
            "first_token_s": "0.1", "toks_per_s": "10", "output_tokens": "10", "gpu_energy_j": "100",
            "cpu_energy_j": "20", "j_per_token": "10", "quality_score": "", "bartscore": "", "gpu_simulated": "true"}
    base.update(kw)
    return base


class TestKeyFigures:
    def test_means_over_ok_rows_and_failed_counted_apart(self):
        figs = figures.key_figures([row(latency_s="1.0"), row(latency_s="3.0"),
                                    row(status="failed", ok="false", latency_s="100")])
        [f] = figs
        assert (f["n_ok"], f["n_failed"]) == (2, 1)
        assert f["latency_s"] == pytest.approx(2.0)  # the failed request's latency is not averaged in

    def test_empty_cells_stay_absent_never_zero(self):
        [f] = figures.key_figures([row(gpu_energy_j=""), row(gpu_energy_j="")])
        assert f["gpu_energy_j"] is None and f["quality_score"] is None
        table = figures.format_table([f])
        cells = table.splitlines()[-1].strip("| ").split(" | ")
        heads = table.splitlines()[0].strip("| ").split(" | ")
        assert cells[:4] == ["m", "qa", "short", "2/2"]
        assert cells[heads.index("GPU J")] == "-" and cells[heads.index("quality")] == "-"

    def test_one_group_per_model_task_load(self):
        figs = figures.key_figures([row(), row(load="medium"), row(task="code"), row()])
        assert sorted((f["task"], f["load"], f["n_ok"]) for f in figs) == [
            ("code", "short", 1), ("qa", "medium", 1), ("qa", "short", 2)]

    def test_bartscore_note_is_the_quality_modules_reason(self):
        rows = [row(bartscore_error="checkpoint 'x' is not in the local cache. Fix: set BARTSCORE_CHECKPOINT")]
        assert "BARTSCORE_CHECKPOINT" in figures.bartscore_note(rows)
        assert figures.bartscore_note([row(bartscore="-2.5", bartscore_error="")]) is None

    def test_reads_the_analyzers_bom_csv(self, tmp_path):
        p = tmp_path / "results.csv"
        p.write_bytes("\ufeffmodel,task,load,status,latency_s\nm,qa,short,ok,1.5\n".encode("utf-8"))
        assert figures.read_results(p) == [{"model": "m", "task": "qa", "load": "short", "status": "ok",
                                            "latency_s": "1.5"}]


class TestPlan:
    def test_builtin_server_uses_the_openai_backend_and_the_demo_model(self, tmp_path):
        args = collector_args(DemoSettings(runs=2, max_tokens=64), tmp_path / "b", "http://127.0.0.1:1",
                              "tcp://127.0.0.1:2", "tcp://127.0.0.1:3")
        joined = " ".join(args)
        assert args[0] == "collector" and "--backend openai" in joined and f"--models {DEMO_MODEL}" in joined
        assert "--runs 2" in joined and "--max-tokens 64" in joined and "--langs en" in joined
        assert "--tasks qa summary code creative" in joined and "--loads short --langs en zh" in joined
        assert "--telemetry-endpoint tcp://127.0.0.1:2" in joined and "--events-endpoint tcp://127.0.0.1:3" in joined
        assert "--no-telemetry" not in args and "--no-analyze" not in args  # energy and analysis are the point

    def test_live_page_on_a_free_loopback_port_unless_turned_off(self, tmp_path):
        from demo.__main__ import build_parser, settings_from

        s = settings_from(build_parser().parse_args([]))
        assert s.serve and s.serve.startswith("127.0.0.1:") and int(s.serve.split(":")[1]) > 0
        args = collector_args(s, tmp_path, "http://127.0.0.1:1", "tcp://a", "tcp://b")
        assert args[args.index("--serve") + 1] == s.serve  # the collector starts the page and prints its URL
        off = settings_from(build_parser().parse_args(["--no-serve"]))
        assert off.serve is None and "--serve" not in collector_args(off, tmp_path, "http://x", "tcp://a", "tcp://b")

    def test_ollama_keeps_models_loaded_and_warms_up(self, tmp_path):
        s = DemoSettings(ollama=True, models=("gemma3:1b",))
        args = collector_args(s, tmp_path, "http://127.0.0.1:11434", "tcp://a", "tcp://b")
        assert "--backend" in args and args[args.index("--backend") + 1] == "ollama"
        assert "--warmup" in args and args[args.index("--keepalive") + 1] == "5m"
        assert args[args.index("--models") + 1] == "gemma3:1b"

    @pytest.mark.parametrize("kw,needle", [
        ({"runs": 0}, "--runs"), ({"max_tokens": 0}, "--max-tokens"), ({"ollama": True}, "--ollama needs --models"),
        ({"models": ("llama3",)}, "--ollama"),
    ])
    def test_bad_settings_name_the_flag(self, kw, needle):
        with pytest.raises(ValueError, match=needle):
            DemoSettings(**kw).validate()

    def test_telemetry_is_simulated_and_on_the_given_endpoint(self):
        args = telemetry_args("tcp://127.0.0.1:9")
        assert args[:3] == ["telemetry", "--gpu", "sim"] and "tcp://127.0.0.1:9" in args
        assert telemetry_args("tcp://127.0.0.1:9", 8081)[-2:] == ["--server-port", "8081"]


SPAWNER = textwrap.dedent("""
    import signal, subprocess, sys, time
    if sys.argv[1] == "stubborn" and hasattr(signal, "SIGINT"):
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # ignores the polite stop
    kid = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    print(kid.pid, flush=True)
    time.sleep(60)
""")


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="process groups are POSIX; Windows uses CREATE_NEW_PROCESS_GROUP")
@pytest.mark.parametrize("kind", ["polite", "stubborn"])
def test_stop_ends_the_child_and_its_grandchildren(tmp_path, kind):
    """A child that obeys SIGINT stops at once; one that ignores it is killed after the timeout;
    either way the grandchild in its process group is gone too."""
    script = tmp_path / "spawner.py"
    script.write_text(SPAWNER, encoding="utf-8")
    log = tmp_path / "spawner.log"
    child = Child("spawner", [], log_path=log)
    child.argv = [sys.executable, str(script), kind]  # a plain script instead of `python -m`
    child.start()
    grandchild = None
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not log.read_text().strip():
            time.sleep(0.05)
        grandchild = int(log.read_text().split()[0])
        assert psutil.pid_exists(grandchild)
        started = time.monotonic()
        rc = child.stop(timeout_s=1.0)
        assert rc is not None and not child.alive()
        if kind == "stubborn":
            assert rc == -9 and time.monotonic() - started >= 1.0  # killed after the polite wait
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and psutil.pid_exists(grandchild) and \
                psutil.Process(grandchild).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.05)
        assert not psutil.pid_exists(grandchild) or psutil.Process(grandchild).status() == psutil.STATUS_ZOMBIE
    finally:
        if child.alive():
            child.proc.kill()
        if grandchild and psutil.pid_exists(grandchild):
            try:
                psutil.Process(grandchild).kill()
            except psutil.NoSuchProcess:
                pass


@pytest.mark.slow
def test_help_answers():
    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, "-m", "demo", "--help"], cwd=ROOT, capture_output=True, text=True,
                         encoding="utf-8", timeout=60)
    assert out.returncode == 0
    for flag in ("--out", "--runs", "--tasks", "--loads", "--max-tokens", "--ollama", "--models", "--keep-running"):
        assert flag in out.stdout


@pytest.mark.slow
def test_bad_arguments_exit_2_naming_the_flag_before_starting_anything(tmp_path):
    from tests.conftest import ROOT

    out = subprocess.run([sys.executable, "-m", "demo", "--runs", "0", "--out", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, encoding="utf-8", timeout=60)
    assert out.returncode == 2 and "--runs must be at least 1" in out.stderr
    assert list(tmp_path.iterdir()) == [] and "child_started" not in out.stderr


class TestFigureNames:
    def test_group_ratio_is_the_reports_group_figure_not_a_mean_of_ratios(self):
        rows = [row(quality_score="1.0", total_energy_j="100", quality_per_kj="10", quality_basis="chrf"),
                row(quality_score="0.0", total_energy_j="500", quality_per_kj="0", quality_basis="chrf")]
        [f] = figures.key_figures(rows)
        assert f["group_quality_per_kj"] == pytest.approx(1000 * 0.5 / 300)  # not (10 + 0) / 2
        heads = figures.format_table([f]).splitlines()[0]
        assert "group 效质比 q/kJ" in heads and "GPU J/tok" in heads and "| J/tok |" not in heads

    @pytest.mark.parametrize("ratio, cell", [(0.08531, "0.0853"), (0.01751, "0.0175"), (12.345, "12.35"),
                                             (0.0, "0.00"), (0.30, "0.300")])
    def test_group_ratio_keeps_three_significant_digits(self, ratio, cell):
        """Simulated-GPU ratios are ~0.01-0.1 q/kJ: the table shows what report.html shows, not 0.09 for 0.0853."""
        [f] = figures.key_figures([row(quality_score="1", total_energy_j="1", quality_basis="chrf")])
        f["group_quality_per_kj"] = ratio
        cells = [c.strip() for c in figures.format_table([f]).splitlines()[2].split("|")]
        assert cells[figures.format_table([f]).splitlines()[0].split("|").index(" group 效质比 q/kJ ")] == cell

    def test_mixed_bases_give_no_group_ratio(self):
        [f] = figures.key_figures([row(quality_score="1", total_energy_j="1", quality_basis="chrf"),
                                   row(quality_score="1", total_energy_j="1", quality_basis="bartscore")])
        assert f["group_quality_per_kj"] is None


class TestSuiteDemo:
    def test_suite_flags_reach_the_collector_instead_of_the_tasks(self):
        from demo.__main__ import build_parser, settings_from
        from demo.plan import SUITE_MAX_TOKENS, collector_args

        s = settings_from(build_parser().parse_args(["--suite", "humaneval", "--limit", "20"]))
        args = collector_args(s, Path("b"), "http://x", "tcp://t", "tcp://e")
        assert "--tasks" not in args and args[args.index("--suite") + 1] == "humaneval"
        assert args[args.index("--limit") + 1] == "20" and args[args.index("--runs") + 1] == "1"
        assert args[args.index("--max-tokens") + 1] == str(SUITE_MAX_TOKENS)
        both = settings_from(build_parser().parse_args(["--suite", "humaneval", "--tasks", "qa"]))
        assert collector_args(both, Path("b"), "u", "t", "e").count("--tasks") == 1

    def test_suite_table(self):
        table = figures.format_suites([{"suite": "humaneval", "model": "m", "n": "20", "accuracy": "0.05",
                                        "accuracy_ci95_low": "0.0089", "accuracy_ci95_high": "0.236",
                                        "j_per_item": "12.34", "j_per_correct": "246.8"}])
        assert "pass@1" in table.splitlines()[0] and "J per problem" in table.splitlines()[0]
        # GPU + CPU energy, said so: the main table beside it shows "GPU J" (24033 vs 30281 per problem)
        assert "J per problem (GPU+CPU)" in table and "J per correct (GPU+CPU)" in table
        assert "| humaneval | m | 20 | 0.050 | 0.009 | 0.236 | - | 12.3 | 246.8 | - |" in table
