"""Case tests run against generated code in a real child interpreter, never in this process."""
from __future__ import annotations

import os
import sys

import pytest

from analyzer.quality.sandbox import SandboxResult, run_tests

GOOD = "def add(a, b):\n    return a + b\n"
TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0, 'add(-1, 1) should be 0'\n"


class TestRunTests:
    def test_passing_code_passes(self):
        assert run_tests(GOOD, TESTS, "add") == SandboxResult(True, None)

    def test_failing_assert_reports_its_message(self):
        result = run_tests("def add(a, b):\n    return abs(a) + b\n", TESTS, "add")
        assert not result.passed
        assert "AssertionError" in result.error and "add(-1, 1) should be 0" in result.error

    def test_bare_assert_names_the_failing_line(self):
        result = run_tests("def add(a, b):\n    return 0\n", TESTS, "add")
        assert result == SandboxResult(False, "test failed at tests.py:1 `assert add(1, 2) == 3`: AssertionError")

    def test_missing_entry_is_named(self):
        result = run_tests("def plus(a, b):\n    return a + b\n", TESTS, "add")
        assert result == SandboxResult(False, "entry 'add' is not defined by the code")

    def test_code_that_raises_on_import_fails(self):
        result = run_tests("raise RuntimeError('boom')\n", TESTS, "add")
        assert not result.passed and "RuntimeError: boom" in result.error

    def test_endless_loop_is_killed_at_the_timeout(self):
        result = run_tests("while True:\n    pass\n", TESTS, None, timeout_s=1.0)
        assert result == SandboxResult(False, "timeout: tests did not finish within 1 s")

    def test_code_runs_in_another_process(self):
        """The generated code cannot touch the analyzer's memory: its writes to os.environ stay there."""
        code = "import os\nos.environ['QUALITY_SANDBOX_PROBE'] = str(os.getpid())\n"
        result = run_tests(code, f"import os\nassert int(os.environ['QUALITY_SANDBOX_PROBE']) != {os.getpid()}\n")
        assert result.passed, result.error
        assert "QUALITY_SANDBOX_PROBE" not in os.environ

    def test_cwd_is_a_fresh_temp_dir(self, tmp_path, monkeypatch):
        """Files the code writes land in its own temp dir, not in the analyzer's cwd."""
        monkeypatch.chdir(tmp_path)
        code = "open('left_behind.txt', 'w').write('x')\n"
        assert run_tests(code, "import os\nassert os.path.exists('left_behind.txt')\n").passed
        assert not (tmp_path / "left_behind.txt").exists()

    def test_isolated_mode_ignores_pythonpath(self, tmp_path, monkeypatch):
        """-I: a module on PYTHONPATH (or the user site) is invisible to the generated code."""
        (tmp_path / "quality_probe_mod.py").write_text("X = 1\n", encoding="utf-8")
        monkeypatch.setenv("PYTHONPATH", str(tmp_path))
        result = run_tests("import quality_probe_mod\n", "pass\n")
        assert not result.passed and "ModuleNotFoundError" in result.error

    @pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux; macOS ignores it, Windows lacks it")
    def test_memory_limit_stops_a_huge_allocation(self):
        result = run_tests("block = bytearray(3 * 1024 ** 3)\n", "pass\n")
        assert not result.passed and "MemoryError" in result.error

    @pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX; on Windows only the child is killed")
    def test_background_processes_of_the_code_are_killed(self, tmp_path):
        """A process the generated code leaves running is killed with it, not left behind."""
        psutil = pytest.importorskip("psutil")
        pid_file = tmp_path / "grandchild.pid"
        code = ("import subprocess, sys\n"
                "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n")
        assert run_tests(code, "pass\n").passed
        pid = int(pid_file.read_text())
        try:
            proc = psutil.Process(pid)
            proc.wait(timeout=5)  # killed: gone, or a zombie that its new parent reaps
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            proc.kill()  # do not leave it behind even when the test fails
            pytest.fail(f"background process {pid} survived the sandbox run")

    def test_unicode_code_and_output_survive(self):
        code = "def greet():\n    return '你好'\nprint('输出 ✓')\n"
        assert run_tests(code, "assert greet() == '你好'\n", "greet").passed

    def test_rejects_a_non_positive_timeout(self):
        with pytest.raises(ValueError, match="code_timeout_s"):
            run_tests(GOOD, TESTS, "add", timeout_s=0)
