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
