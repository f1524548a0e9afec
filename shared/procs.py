"""Stopping child processes: the one place that knows how POSIX and Windows differ.

A child started with :func:`group_popen_kwargs` runs in its own process group (POSIX: a new session;
Windows: ``CREATE_NEW_PROCESS_GROUP``), so a Ctrl-C in the terminal reaches only its parent, which then
stops it: first politely (POSIX: SIGINT to the whole group; Windows: ``CTRL_BREAK_EVENT``, which reaches
the child's group; every entry point of this project treats both like Ctrl-C), then by force (POSIX:
SIGKILL to the group; Windows: TerminateProcess of the child alone — its own children are not reached).

The Windows branch has never run on Windows (no Windows machine in CI): tests check what it calls on
any OS through :func:`signal_plan`, and the POSIX branch with real process trees.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

CTRL_BREAK_EVENT = getattr(signal, "CTRL_BREAK_EVENT", 1)  # its value on Windows, so the plan is testable anywhere
CREATE_NEW_PROCESS_GROUP = getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0x200)


def ctrl_c_interrupts() -> None:
    """Ctrl-C (SIGINT) raises KeyboardInterrupt here even when this process was started with SIGINT
    ignored, as a shell starts a background job (``cmd &`` in a script): an ignored SIGINT is inherited
    by every child, and the collector, the demo and the tests stop their children with SIGINT, which
    would then never reach them. With a handler here, children start with the default again (a handler,
    unlike SIG_IGN, does not outlive exec). Call it first thing in an entry point."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def group_popen_kwargs(platform: str = sys.platform) -> dict[str, Any]:
    """Popen keyword arguments that put the child in its own process group."""
    if platform == "win32":
        return {"creationflags": CREATE_NEW_PROCESS_GROUP}
    return {"start_new_session": True}


def signal_plan(polite: bool, own_group: bool = True, platform: str = sys.platform,
                terminate: bool = False) -> tuple[str, int | None]:
    """What stopping a child does: ``("killpg", sig)`` (the child's group), ``("send_signal", sig)``
    (the child alone) or ``("kill", None)`` (TerminateProcess / SIGKILL of the child alone).
    ``terminate``: the polite stop is SIGTERM (Windows: TerminateProcess) rather than a Ctrl-C, for
    children that are not ours to interrupt (servers, the live analyzer)."""
    if platform == "win32":
        # CTRL_BREAK_EVENT can only address a process group; a child in ours is terminated instead
        return ("send_signal", CTRL_BREAK_EVENT) if polite and own_group and not terminate else ("kill", None)
    sig = (signal.SIGTERM if terminate else signal.SIGINT) if polite else signal.SIGKILL
    return ("killpg", sig) if own_group else ("send_signal", sig)


def signal_child(proc: subprocess.Popen, polite: bool, own_group: bool = True, platform: str = sys.platform,
                 terminate: bool = False) -> None:
    """Send the stop :func:`signal_plan` says; a child already gone is not an error."""
    how, sig = signal_plan(polite, own_group, platform, terminate)
    try:
        if how == "killpg":
            os.killpg(proc.pid, sig)
        elif how == "send_signal":
            proc.send_signal(sig)
        else:
            proc.kill()
    except (ProcessLookupError, PermissionError, OSError):
        pass  # already gone


def stop_child(proc: subprocess.Popen, timeout_s: float, *, own_group: bool = True, asked: bool = False,
               terminate: bool = False, kill_wait_s: float = 10.0, platform: str = sys.platform) -> int | None:
    """Stop ``proc`` politely (unless ``asked``: it already got the same Ctrl-C), wait ``timeout_s``, then
    kill it and wait ``kill_wait_s``; a further Ctrl-C while waiting kills it at once. Returns its return
    code. ``own_group``: the child was started with :func:`group_popen_kwargs`, so its whole group is
    stopped; otherwise the child alone. ``terminate``: ask with SIGTERM (Windows: TerminateProcess)
    instead of a Ctrl-C. This is the project's one terminate–wait–kill; use it rather than a copy."""
    if proc.poll() is not None:
        return proc.returncode
    if not asked:
        signal_child(proc, True, own_group, platform, terminate)
    try:
        proc.wait(timeout_s)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        signal_child(proc, False, own_group, platform)
        try:
            proc.wait(kill_wait_s)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            pass
    return proc.poll()
