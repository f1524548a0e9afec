"""shared/procs.py: how a child is put in its own process group and stopped. The Windows branch has never
run on Windows: its plan is checked on any OS (what it would call), the POSIX branch on real processes."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import pytest

from shared import procs


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
