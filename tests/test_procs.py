"""shared/procs.py: how a child is put in its own process group and stopped. The Windows branch has never
run on Windows: its plan is checked on any OS (what it would call), the POSIX branch on real processes."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from shared import procs

ROOT = Path(__file__).resolve().parent.parent


class Recorded:
    """Stands in for subprocess.Popen where the OS call cannot happen here (CTRL_BREAK_EVENT)."""

    def __init__(self):
        self.pid, self.calls = 4242, []

    def send_signal(self, sig):
        self.calls.append(("send_signal", sig))

    def kill(self):
        self.calls.append(("kill", None))


def test_windows_plan_ctrl_break_to_the_group_then_terminate():
    assert procs.group_popen_kwargs("win32") == {"creationflags": procs.CREATE_NEW_PROCESS_GROUP}
    assert procs.signal_plan(True, platform="win32") == ("send_signal", procs.CTRL_BREAK_EVENT)
    assert procs.signal_plan(False, platform="win32") == ("kill", None)
    # CTRL_BREAK_EVENT only addresses a group: a child in ours is terminated
    assert procs.signal_plan(True, own_group=False, platform="win32") == ("kill", None)
    p = Recorded()
    procs.signal_child(p, True, platform="win32")
    procs.signal_child(p, False, platform="win32")
    assert p.calls == [("send_signal", procs.CTRL_BREAK_EVENT), ("kill", None)]


def test_posix_plan_sigint_then_sigkill_to_the_group():
    assert procs.group_popen_kwargs("linux") == {"start_new_session": True}
    assert procs.signal_plan(True, platform="linux") == ("killpg", signal.SIGINT)
    assert procs.signal_plan(False, platform="darwin") == ("killpg", signal.SIGKILL)
    assert procs.signal_plan(True, own_group=False, platform="linux") == ("send_signal", signal.SIGINT)


@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX branch, on real processes")
@pytest.mark.parametrize("ignores_sigint, expected", [(False, 130), (True, -signal.SIGKILL)])
def test_stop_child_asks_then_kills_a_real_child(ignores_sigint, expected):
    code = ("import signal, sys, time\n"
            + ("signal.signal(signal.SIGINT, signal.SIG_IGN)\n" if ignores_sigint else "")
            + "try:\n    print('up', flush=True)\n    time.sleep(60)\nexcept KeyboardInterrupt:\n    sys.exit(130)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, **procs.group_popen_kwargs())
    try:
        assert proc.stdout.readline().strip() == "up"
        t0 = time.monotonic()
        assert procs.stop_child(proc, timeout_s=1.0) == expected
        if ignores_sigint:
            assert time.monotonic() - t0 >= 1.0  # the polite wait came first
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
    assert procs.stop_child(proc, 1.0) == expected  # already gone: just its code


def test_terminate_plan_sigterm_or_terminateprocess():
    # servers and the live analyzer are asked with SIGTERM (Windows: TerminateProcess), not a Ctrl-C
    assert procs.signal_plan(True, own_group=False, platform="linux", terminate=True) == ("send_signal", signal.SIGTERM)
    assert procs.signal_plan(True, platform="linux", terminate=True) == ("killpg", signal.SIGTERM)
    assert procs.signal_plan(False, own_group=False, platform="linux", terminate=True) == ("send_signal", signal.SIGKILL)
    assert procs.signal_plan(True, platform="win32", terminate=True) == ("kill", None)


@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX branch, on real processes")
@pytest.mark.parametrize("ignores_sigterm, expected", [(False, -signal.SIGTERM), (True, -signal.SIGKILL)])
def test_stop_child_terminates_a_child_in_our_group_alone(ignores_sigterm, expected):
    """A child in our own process group (the proxy's live analyzer, the demo server): SIGTERM to it alone,
    then SIGKILL after the wait; this test process, in the same group, is untouched."""
    code = ("import signal, time\n"
            + ("signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" if ignores_sigterm else "")
            + "print('up', flush=True)\ntime.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "up"
        t0 = time.monotonic()
        assert procs.stop_child(proc, 0.5, own_group=False, terminate=True, kill_wait_s=5) == expected
        assert (time.monotonic() - t0 >= 0.5) == ignores_sigterm  # killed only after the polite wait
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


@pytest.mark.skipif(sys.platform == "win32", reason="the POSIX branch, on real processes")
def test_stop_child_terminates_a_whole_own_group():
    """A child started in its own group: SIGTERM reaches its grandchild too."""
    code = ("import subprocess, sys, time\n"
            "g = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
            "print(g.pid, flush=True)\ng.wait()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, **procs.group_popen_kwargs())
    grandchild = None
    try:
        grandchild = int(proc.stdout.readline())
        assert procs.stop_child(proc, 5, terminate=True) == -signal.SIGTERM
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _alive(grandchild):
            time.sleep(0.05)
        assert not _alive(grandchild)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _alive(pid: int) -> bool:
    import os
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not yet reaped by init) counts as gone
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


_GRANDCHILD = "import time; print('ready', flush=True); time.sleep(30)"
_PARENT = f"""import subprocess, sys
from shared.procs import ctrl_c_interrupts
if sys.argv[1] == 'restore':
    ctrl_c_interrupts()
child = subprocess.Popen([sys.executable, '-c', {_GRANDCHILD!r}], stdout=subprocess.PIPE, text=True)
print(child.pid, child.stdout.readline().strip(), flush=True)
print(child.wait(), flush=True)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT inherited as ignored is a POSIX thing")
@pytest.mark.parametrize("how", ["restore", "leave"])
def test_a_process_started_with_sigint_ignored_still_stops_its_children_with_it(how):
    """A parent started with SIGINT ignored (a shell's background job) passes the ignore on to its
    children, so a SIGINT meant to stop one is lost; ctrl_c_interrupts() in the parent ends that."""
    parent = subprocess.Popen([sys.executable, "-c", _PARENT, how], stdout=subprocess.PIPE, text=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))
    try:
        pid, ready = parent.stdout.readline().split()
        assert ready == "ready"
        os.kill(int(pid), signal.SIGINT)
        if how == "restore":
            assert parent.stdout.readline().strip() == str(-signal.SIGINT)  # the grandchild died of it
        else:
            time.sleep(1.0)
            os.kill(int(pid), 0)  # still running: the SIGINT was ignored
            os.kill(int(pid), signal.SIGKILL)
            assert parent.stdout.readline().strip() == str(-signal.SIGKILL)
        assert parent.wait(10) == 0
    finally:
        parent.kill()


@pytest.mark.parametrize("module", ["analyzer", "collector", "demo", "bench"])
def test_the_entry_points_that_stop_children_take_ctrl_c_back(module):
    """python -m analyzer / collector / demo / bench started with SIGINT ignored: Ctrl-C raises
    KeyboardInterrupt in them again (their children then start with the default)."""
    code = (f"import runpy, signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); sys.argv = [{module!r}, '--help']\n"
            f"try:\n    runpy.run_module({module!r}, run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.stdout.strip().splitlines()[-1] == "True", out.stderr[-2000:]
