"""Case tests run against generated code in a real child interpreter, never in this process: under
bubblewrap where it works (the hostile answers below must be contained), else skipped unless the
unsafe opt-in is given."""
from __future__ import annotations

import os
import socket
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from analyzer.quality import sandbox
from analyzer.quality.sandbox import SandboxChoice, SandboxResult, run_tests
from tests.conftest import require_sandbox

GOOD = "def add(a, b):\n    return a + b\n"
TESTS = "assert add(1, 2) == 3\nassert add(-1, 1) == 0, 'add(-1, 1) should be 0'\n"

CHOICE = sandbox.sandbox_choice()
# no working bwrap: skipped with the reason and the install line; under CI=true (.ci/run installs
# bubblewrap) a failure instead, never a quiet skip (tests/conftest.py: require_sandbox)
needs_bwrap = pytest.mark.usefixtures("sandbox_choice")
UNSAFE = SandboxChoice(sandbox.UNSAFE, "test: the unsafe opt-in")


@pytest.fixture(params=["bwrap", "unsafe"])
def choice(request):
    """Every generic behaviour holds in the sandbox and in the unsafe opt-in alike."""
    if request.param == "bwrap":
        return require_sandbox()
    return UNSAFE


class TestRunTests:
    """Behaviour shared by both modes."""

    def test_passing_code_passes(self, choice):
        assert run_tests(GOOD, TESTS, "add", choice=choice) == SandboxResult(True, None)

    def test_failing_assert_reports_its_message(self, choice):
        result = run_tests("def add(a, b):\n    return abs(a) + b\n", TESTS, "add", choice=choice)
        assert not result.passed
        assert "AssertionError" in result.error and "add(-1, 1) should be 0" in result.error

    def test_bare_assert_names_the_failing_line(self, choice):
        result = run_tests("def add(a, b):\n    return 0\n", TESTS, "add", choice=choice)
        assert result == SandboxResult(False, "test failed at tests.py:1 `assert add(1, 2) == 3`: AssertionError")

    def test_missing_entry_is_named(self, choice):
        result = run_tests("def plus(a, b):\n    return a + b\n", TESTS, "add", choice=choice)
        assert result == SandboxResult(False, "entry 'add' is not defined by the code")

    def test_code_that_raises_on_import_fails(self, choice):
        result = run_tests("raise RuntimeError('boom')\n", TESTS, "add", choice=choice)
        assert not result.passed and "RuntimeError: boom" in result.error

    def test_endless_loop_is_killed_at_the_timeout(self, choice):
        result = run_tests("while True:\n    pass\n", TESTS, None, timeout_s=1.0, choice=choice)
        assert result == SandboxResult(False, "timeout: tests did not finish within 1 s")

    def test_code_runs_in_another_process(self, choice):
        """The generated code cannot touch the analyzer's memory: its writes to os.environ stay there."""
        code = "import os\nos.environ['QUALITY_SANDBOX_PROBE'] = str(os.getpid())\n"
        tests = f"import os\nassert int(os.environ['QUALITY_SANDBOX_PROBE']) != {os.getpid()}\n"
        result = run_tests(code, tests, choice=choice)
        assert result.passed, result.error
        assert "QUALITY_SANDBOX_PROBE" not in os.environ

    def test_cwd_is_a_fresh_temp_dir(self, choice, tmp_path, monkeypatch):
        """Files the code writes land in its own temp dir, not in the analyzer's cwd."""
        monkeypatch.chdir(tmp_path)
        code = "open('left_behind.txt', 'w').write('x')\n"
        assert run_tests(code, "import os\nassert os.path.exists('left_behind.txt')\n", choice=choice).passed
        assert not (tmp_path / "left_behind.txt").exists()

    def test_isolated_mode_ignores_pythonpath(self, choice, tmp_path, monkeypatch):
        """-I: a module on PYTHONPATH (or the user site) is invisible to the generated code."""
        (tmp_path / "quality_probe_mod.py").write_text("X = 1\n", encoding="utf-8")
        monkeypatch.setenv("PYTHONPATH", str(tmp_path))
        result = run_tests("import quality_probe_mod\n", "pass\n", choice=choice)
        assert not result.passed and "ModuleNotFoundError" in result.error

    @pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS is enforced on Linux; macOS ignores it, Windows lacks it")
    def test_memory_limit_stops_a_huge_allocation(self, choice):
        result = run_tests("block = bytearray(3 * 1024 ** 3)\n", "pass\n", choice=choice)
        assert not result.passed and "MemoryError" in result.error

    @pytest.mark.skipif(os.name != "posix", reason="process groups are POSIX; on Windows only the child is killed")
    def test_unsafe_mode_kills_background_processes_of_the_code(self, tmp_path):
        """Without a sandbox, a process the code leaves running in its group is killed with it."""
        psutil = pytest.importorskip("psutil")
        pid_file = tmp_path / "grandchild.pid"
        code = ("import subprocess, sys\n"
                "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
                f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n")
        assert run_tests(code, "pass\n", choice=UNSAFE).passed
        pid = int(pid_file.read_text())
        try:
            proc = psutil.Process(pid)
            proc.wait(timeout=5)  # killed: gone, or a zombie that its new parent reaps
        except psutil.NoSuchProcess:
            pass
        except psutil.TimeoutExpired:
            proc.kill()  # do not leave it behind even when the test fails
            pytest.fail(f"background process {pid} survived the sandbox run")

    def test_unicode_code_and_output_survive(self, choice):
        code = "def greet():\n    return '你好'\nprint('输出 ✓')\n"
        assert run_tests(code, "assert greet() == '你好'\n", "greet", choice=choice).passed

    def test_rejects_a_non_positive_timeout(self):
        with pytest.raises(ValueError, match="code_timeout_s"):
            run_tests(GOOD, TESTS, "add", timeout_s=0)


class TestChooseSandbox:
    """Pure: which sandbox, and the reason shown in the row and the report when there is none."""

    @pytest.mark.parametrize("system", ["Windows", "Darwin"])
    def test_no_sandbox_off_linux_skips_with_the_reason_and_the_flag(self, system):
        choice = sandbox.choose_sandbox(system, None, None, allow_unsafe=False)
        assert choice.kind == sandbox.SKIPPED
        assert system in choice.reason and "bubblewrap" in choice.reason and sandbox.UNSAFE_FLAG in choice.reason

    def test_linux_without_bwrap_says_how_to_install_it(self):
        choice = sandbox.choose_sandbox("Linux", None, None, allow_unsafe=False)
        assert choice.kind == sandbox.SKIPPED and "apt-get install bubblewrap" in choice.reason

    def test_bwrap_that_cannot_start_names_the_error(self):
        choice = sandbox.choose_sandbox("Linux", "/usr/bin/bwrap", "bwrap: No permissions to create new namespace",
                                        allow_unsafe=False)
        assert choice.kind == sandbox.SKIPPED
        assert "No permissions to create new namespace" in choice.reason and "user namespaces" in choice.reason

    def test_working_bwrap_is_used_even_with_the_unsafe_flag(self):
        assert sandbox.choose_sandbox("Linux", "/usr/bin/bwrap", None, allow_unsafe=True) == \
            SandboxChoice(sandbox.BWRAP, None, "/usr/bin/bwrap")

    @pytest.mark.parametrize("system, bwrap", [("Windows", None), ("Linux", None)])
    def test_unsafe_opt_in_runs_without_a_sandbox_and_keeps_the_reason(self, system, bwrap):
        choice = sandbox.choose_sandbox(system, bwrap, None, allow_unsafe=True)
        assert choice.kind == sandbox.UNSAFE and sandbox.UNSAFE_FLAG in choice.reason


class TestBwrapArgv:
    """Pure: the bubblewrap command line."""

    def test_interpreter_under_a_covered_dir_is_bound_back(self):
        """Seen in a fresh clone under /tmp: the venv was hidden by the working dir's tmpfs, so the
        sandboxed python could not start. Its dirs are bound back, outermost only."""
        dirs = {"/tmp/ci/main/.venv", "/tmp/ci/main/.venv/bin", "/root/.pyenv/versions/3.11.7",
                "/root/.pyenv/versions/3.11.7/bin", "/usr/lib/python3"}
        assert sandbox.python_dirs(dirs, ["/root", "/tmp"]) == ["/tmp/ci/main/.venv", "/root/.pyenv/versions/3.11.7"]
        assert sandbox.python_dirs({"/usr", "/usr/bin"}, ["/root", "/tmp"]) == []

    def test_hidden_dirs_parents_first_without_nesting_or_the_workdir(self):
        got = sandbox.hidden_dirs(["/root", "/home/u", "/home", "/tmp/x", "/", "relative", "", "/run/user/1000/"])
        assert got == ["/home", "/root", "/run/user/1000"]

    def test_namespaces_read_only_root_hidden_dirs_and_workdir(self):
        argv = sandbox.bwrap_argv("bwrap", ["py", "-I", "x.py"], ["/home", "/root"], ["/root/.pyenv/v"], "/host/in")
        assert argv[0] == "bwrap" and argv[-4:] == ["--", "py", "-I", "x.py"]
        for flag in ("--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"):
            assert flag in argv
        assert argv[argv.index("--cap-drop") + 1] == "ALL"
        assert argv[argv.index("--uid") + 1] == "65534"

        def at(*seq):
            for i in range(len(argv) - len(seq) + 1):
                if argv[i:i + len(seq)] == list(seq):
                    return i
            raise AssertionError(f"{seq} not in {argv}")
        root = at("--ro-bind", "/", "/")
        assert root < at("--tmpfs", "/home") < at("--tmpfs", "/root") < at("--ro-bind", "/root/.pyenv/v", "/root/.pyenv/v")
        assert at("--size", str(64 * 1024 * 1024), "--tmpfs", "/tmp") > root
        assert at("--ro-bind", "/host/in", "/tmp/in") > at("--tmpfs", "/tmp")
        # read-only again only after the binds into them
        assert at("--remount-ro", "/root") > at("--ro-bind", "/root/.pyenv/v", "/root/.pyenv/v")
        assert at("--chdir", "/tmp") < argv.index("--")
        assert "--share-net" not in argv and "--bind" not in argv  # no network, nothing writable from the host


def _marked(marker: str) -> list:
    """Processes on this machine whose name (/proc/PID/comm) is ``marker``."""
    psutil = pytest.importorskip("psutil")
    found = []
    for proc in psutil.process_iter(["name"]):
        if proc.info["name"] == marker:
            found.append(proc)
    return found


def _wait_for(predicate, timeout_s: float = 3.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def _hostile(payload: str) -> str:
    """The payload, then a correct add(): only containment decides the outcome."""
    return payload + "\n" + GOOD


@pytest.fixture
def outside_dir():
    """A dir neither under /tmp nor under a home: visible inside the sandbox, read-only there."""
    d = Path(__file__).resolve().parent / f".sandbox-probe-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    yield d
    for f in sorted(d.rglob("*"), reverse=True):
        f.unlink() if f.is_file() else f.rmdir()
    d.rmdir()


@needs_bwrap
class TestHostileAnswersAreContained:
    """Each answer also defines a correct add(), so the tests pass only when the harm is contained. Each
    harm that is safe to let through here is also run with the unsafe opt-in: the positive control that
    shows the check can fail."""

    @pytest.mark.parametrize("mode, arrives", [("bwrap", False), ("unsafe", True)])
    def test_no_connection_reaches_a_server_on_loopback(self, mode, arrives):
        server = socket.socket()
        server.bind(("127.0.0.1", 0))
        server.listen(4)
        server.settimeout(0.2)
        port = server.getsockname()[1]
        received: list[bytes] = []
        stop = threading.Event()

        def accept():
            while not stop.is_set():
                try:
                    conn, _ = server.accept()
                except OSError:
                    continue
                with conn:
                    conn.settimeout(2)
                    received.append(conn.recv(100))

        thread = threading.Thread(target=accept, daemon=True)
        thread.start()
        code = _hostile("import socket\ntry:\n"
                        f"    s = socket.create_connection(('127.0.0.1', {port}), timeout=3)\n"
                        "    s.sendall(b'exfiltrated')\n    s.close()\nexcept OSError:\n    pass\n")
        try:
            result = run_tests(code, TESTS, "add", choice=CHOICE if mode == "bwrap" else UNSAFE)
            assert result.passed, result.error
            _wait_for(lambda: bool(received), 1.0 if arrives else 0.5)
        finally:
            stop.set()
            thread.join(5)
            server.close()
        assert (received == [b"exfiltrated"]) is arrives

    @pytest.mark.parametrize("mode, appears", [("bwrap", False), ("unsafe", True)])
    def test_no_file_appears_outside_the_working_dir(self, mode, appears, tmp_path, outside_dir):
        targets = [tmp_path / "escaped.txt", outside_dir / "escaped.txt"]
        payload = "for path in %r:\n    try:\n        open(path, 'w').write('x')\n    except OSError:\n" \
                  "        pass\n" % [str(t) for t in targets]
        result = run_tests(_hostile(payload), TESTS, "add", choice=CHOICE if mode == "bwrap" else UNSAFE)
        assert result.passed, result.error
        assert [t.exists() for t in targets] == [appears, appears]

    @pytest.mark.parametrize("mode, leaks", [("bwrap", False), ("unsafe", True)])
    def test_a_secret_in_the_home_directory_reaches_no_output(self, mode, leaks, outside_dir, monkeypatch):
        home = outside_dir / "home"
        (home / ".ssh").mkdir(parents=True)
        secret = f"SECRET-{uuid.uuid4().hex}"
        (home / ".ssh" / "id_ed25519").write_text(secret, encoding="utf-8")
        monkeypatch.setenv("HOME", str(home))
        key = home / ".ssh" / "id_ed25519"
        payload = ("import os, sys\nfound = None\n"
                   f"for path in ({str(key)!r}, os.path.expanduser('~/.ssh/id_ed25519')):\n"
                   "    try:\n        found = open(path).read()\n        break\n    except OSError:\n        pass\n"
                   "if found:\n    print(found)\n    print(found, file=sys.stderr)\n    raise SystemExit(found)\n")
        result = run_tests(_hostile(payload), TESTS, "add", choice=CHOICE if mode == "bwrap" else UNSAFE)
        assert (secret in repr(result)) is leaks
        assert result.passed is not leaks

    def test_a_fork_bomb_ends_within_the_timeout_and_leaves_nothing_running(self):
        marker = f"fb{uuid.uuid4().hex[:13]}"
        payload = ("import os, time\nFORKED = 0\nfor _ in range(200):\n    try:\n        pid = os.fork()\n"
                   "    except OSError:\n        break  # the process limit\n    if pid == 0:\n"
                   f"        open('/proc/self/comm', 'w').write({marker!r})\n        time.sleep(3600)\n"
                   "        os._exit(0)\n    FORKED += 1\n")
        t0 = time.monotonic()
        result = run_tests(_hostile(payload), TESTS + "assert FORKED > 0\n", "add", timeout_s=20, choice=CHOICE)
        elapsed = time.monotonic() - t0
        try:
            assert result.passed, result.error
            assert elapsed < 20
            assert _wait_for(lambda: not _marked(marker)), "forked processes survived the sandbox"
        finally:
            for proc in _marked(marker):
                proc.kill()

    @pytest.mark.parametrize("forever", [False, True])
    def test_printing_without_end_is_bounded(self, forever):
        """Output goes to a file under RLIMIT_FSIZE: the write fails at 16 MiB (the answer then goes on),
        or, when the answer ignores that and prints on, the timeout ends it."""
        loop = "while True:\n    try:\n        sys.stdout.write('x' * 65536)\n    except OSError:\n"
        loop += "        pass\n" if forever else "        break\n"
        t0 = time.monotonic()
        result = run_tests(_hostile("import sys\n" + loop), TESTS, "add", timeout_s=3, choice=CHOICE)
        assert time.monotonic() - t0 < 10
        if forever:
            assert result == SandboxResult(False, "timeout: tests did not finish within 3 s")
        else:
            assert result.passed, result.error

    @pytest.mark.parametrize("mode, survives", [("bwrap", False), ("unsafe", True)])
    def test_a_detached_sleeper_is_killed_with_the_sandbox(self, mode, survives):
        marker = f"ds{uuid.uuid4().hex[:13]}"
        payload = ("import os, time\npid = os.fork()\nif pid == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                   f"        open('/proc/self/comm', 'w').write({marker!r})\n        time.sleep(3600)\n"
                   "    os._exit(0)\nos.waitpid(pid, 0)\ntime.sleep(0.2)\n")
        try:
            result = run_tests(_hostile(payload), TESTS, "add", choice=CHOICE if mode == "bwrap" else UNSAFE)
            assert result.passed, result.error
            if survives:  # the positive control: setsid escapes a process-group kill
                assert _wait_for(lambda: bool(_marked(marker)))
            else:
                assert _wait_for(lambda: not _marked(marker)), "the detached process survived the sandbox"
        finally:
            for proc in _marked(marker):
                proc.kill()

    def test_the_row_names_the_sandbox(self):
        assert run_tests(GOOD, TESTS, "add").sandbox == sandbox.BWRAP
