"""Run a case's tests against generated code in a separate, limited, sandboxed Python process (pass@1).

Model-written code is hostile input. On Linux it runs under bubblewrap (``bwrap``): new user, PID,
network, IPC, UTS and cgroup namespaces (no network at all, not even the host's loopback), every
capability dropped, the whole filesystem read-only, home directories, ``/tmp``, ``/var/tmp`` and
``/run`` replaced by empty read-only tmpfs (the Python installation is bound back read-only when it
lives there), a fresh size-limited tmpfs at ``/tmp`` as the only writable place and working dir,
``--die-with-parent``; the code sees uid/gid ``nobody``. Inside, the child is ``sys.executable -I``
with rlimits (address space, CPU seconds, written file size, process count), and the parent's
wall-clock timeout kills the sandbox and everything in it (its PID namespace).

Where no sandbox is available (Windows, macOS, Linux without bwrap or user namespaces) the tests are
skipped with the reason, unless the caller opts in to ``unsafe_no_sandbox``: then the code runs as
the user with only the rlimits, a temp cwd and the timeout (no security boundary).
"""
from __future__ import annotations

import functools
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Iterable

from shared import timebase
from shared.logs import get_logger

log = get_logger("quality.sandbox")

_RUNNER = Path(__file__).with_name("_sandbox_runner.py")
_MEMORY_MIB = 1024
_FILE_MIB = 16
# Counted per user namespace (Linux >= 5.14), so per sandbox; the kernel exempts root from it, where
# the PID namespace and the timeout still end a fork bomb.
_NPROC = 64
_TMPFS_MIB = 64
_ERROR_CHARS = 300
_NOBODY = 65534  # the uid and gid the code sees inside
WORKDIR = "/tmp"  # inside the sandbox: the fresh tmpfs, the only writable place
_HIDDEN = ("/home", "/root", "/run", "/tmp", "/var/tmp", "/mnt", "/media")
UNSAFE_FLAG = "--unsafe-code-tests-without-sandbox"

BWRAP = "bwrap"
UNSAFE = "none (unsafe opt-in)"
SKIPPED = "skipped"


@dataclass(frozen=True)
class SandboxResult:
    """One test run: ``passed`` (None when skipped), a short ``error``, the ``sandbox`` used, and
    ``skipped`` = why the code was not run."""
    passed: bool | None
    error: str | None = None
    sandbox: str | None = field(default=None, compare=False)
    skipped: str | None = None


@dataclass(frozen=True)
class SandboxChoice:
    """How code tests will run: ``kind`` is BWRAP, UNSAFE or SKIPPED; ``reason`` says why not BWRAP."""
    kind: str
    reason: str | None = None
    bwrap: str | None = None


def choose_sandbox(system: str, bwrap_path: str | None, probe_error: str | None, allow_unsafe: bool) -> SandboxChoice:
    """Pure: the sandbox for this platform, given where bwrap is and what a trial run said."""
    if system != "Linux":
        reason = f"no sandbox on {system}: code tests need bubblewrap, which is Linux only"
    elif bwrap_path is None:
        reason = "bubblewrap (bwrap) is not installed; install it (Debian/Ubuntu: apt-get install bubblewrap)"
    elif probe_error is not None:
        reason = f"bubblewrap cannot start a sandbox here ({probe_error}); user namespaces may be disabled"
    else:
        return SandboxChoice(BWRAP, None, bwrap_path)
    if allow_unsafe:
        return SandboxChoice(UNSAFE, reason + f"; running without a sandbox ({UNSAFE_FLAG})")
    return SandboxChoice(SKIPPED, f"not run: {reason}; or pass {UNSAFE_FLAG} to run model code as your user")


def _under(path: str, parent: str) -> bool:
    return path == parent or path.startswith(parent.rstrip("/") + "/")


def hidden_dirs(candidates: list[str], workdir: str = WORKDIR) -> list[str]:
    """Pure: the absolute dirs to cover with empty tmpfs, parents first, none inside another or the workdir."""
    out: list[str] = []
    for d in sorted({str(PurePosixPath(c)) for c in candidates if c and PurePosixPath(c).is_absolute()},
                    key=lambda p: (p.count("/"), p)):
        if d == "/" or _under(d, workdir) or any(_under(d, kept) for kept in out):
            continue
        out.append(d)
    return out


def bwrap_argv(bwrap: str, command: list[str], hide: list[str], expose: list[str], inputs: str,
               workdir: str = WORKDIR, tmpfs_mib: int = _TMPFS_MIB) -> list[str]:
    """Pure: the bubblewrap command line.

    ``hide``: dirs replaced by empty read-only tmpfs (see hidden_dirs); ``expose``: dirs bound back
    read-only at the same path (the Python installation when it lives in a hidden dir); ``inputs``:
    the host dir holding runner, solution and tests, bound read-only at ``workdir/in``."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--uid", str(_NOBODY), "--gid", str(_NOBODY),
            "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
    for d in hide:
        argv += ["--tmpfs", d]
    argv += ["--size", str(tmpfs_mib * 1024 * 1024), "--tmpfs", workdir]
    for d in expose:
        argv += ["--ro-bind", d, d]
    argv += ["--ro-bind", inputs, f"{workdir}/in"]
    for d in hide:
        argv += ["--remount-ro", d]  # after the binds into them; writes there would only waste memory
    return argv + ["--chdir", workdir, "--", *command]


def _hide_candidates() -> list[str]:
    dirs = list(_HIDDEN) + [os.environ.get(k, "") for k in ("HOME", "TMPDIR", "XDG_RUNTIME_DIR")]
    try:
        import pwd

        dirs.append(pwd.getpwuid(os.getuid()).pw_dir)
    except (ImportError, KeyError):
        pass
    return [d for d in dirs if d and os.path.isdir(d)]


def python_dirs(interpreter_dirs: Iterable[str], covered: list[str]) -> list[str]:
    """Pure: the interpreter's dirs that a tmpfs would cover (a venv or pyenv in $HOME, a checkout
    under /tmp, which the working dir's tmpfs covers), outermost only: they are bound back read-only."""
    under = sorted({str(PurePosixPath(d)) for d in interpreter_dirs
                    if any(_under(str(PurePosixPath(d)), c) for c in covered)}, key=len)
    return [d for i, d in enumerate(under) if not any(_under(d, o) for o in under[:i])]


def _interpreter_dirs() -> set[str]:
    exe = Path(sys.executable)
    return {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix, str(exe.parent),
            str(exe.resolve().parent)}


def _bwrap_command(bwrap: str, inputs: Path, command: list[str]) -> list[str]:
    hide = hidden_dirs(_hide_candidates())
    return bwrap_argv(bwrap, command, hide, python_dirs(_interpreter_dirs(), hide + [WORKDIR]), str(inputs))


def _child_env(home: str) -> dict[str, str]:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": home, "TMPDIR": home, "TEMP": home, "TMP": home}
    for key in ("SYSTEMROOT", "COMSPEC", "PATHEXT", "LANG", "LC_ALL"):  # Windows needs SYSTEMROOT to start Python
        if key in os.environ:
            env[key] = os.environ[key]
    return env


@functools.lru_cache(maxsize=None)
def _probe(bwrap: str) -> str | None:
    """None when a trial sandbox runs this Python; else the reason it does not (cached per process)."""
    with tempfile.TemporaryDirectory(prefix="quality-sandbox-probe-") as tmp:
        inputs = Path(tmp) / "in"
        inputs.mkdir()
        try:
            proc = subprocess.run(_bwrap_command(bwrap, inputs, [sys.executable, "-I", "-c", "pass"]),
                                  stdin=subprocess.DEVNULL, capture_output=True, timeout=30, env=_child_env(WORKDIR))
        except (OSError, subprocess.SubprocessError) as exc:
            return f"{type(exc).__name__}: {exc}"
    if proc.returncode != 0:
        return _last_line(proc.stderr.decode("utf-8", "replace")) or f"exit status {proc.returncode}"
    return None


def sandbox_choice(allow_unsafe: bool = False) -> SandboxChoice:
    """The sandbox on this machine (bwrap is tried once per process)."""
    system = platform.system()
    bwrap = shutil.which("bwrap") if system == "Linux" else None
    probe_error = _probe(bwrap) if bwrap else None
    choice = choose_sandbox(system, bwrap, probe_error, allow_unsafe)
    if choice.kind != BWRAP:
        log.warning("code_tests_sandbox", kind=choice.kind, reason=choice.reason)
    return choice


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return (lines[-1] if lines else "no output")[:_ERROR_CHARS]


def _kill_group(proc: subprocess.Popen) -> None:
    """Kill the child and its process group; under bwrap, --die-with-parent then ends the whole sandbox
    (its PID namespace dies with its first process, detached grandchildren included)."""
    if os.name == "posix":
        try:
            os.killpg(proc.pid, 9)
        except (ProcessLookupError, PermissionError):
            pass
    else:
        proc.kill()


def _wait_keep_zombie(proc: subprocess.Popen, timeout_s: float) -> bool:
    """Wait for the child to exit without reaping it, so its pid (= the group id) cannot be reused
    before the group is killed. True when it exited within ``timeout_s``."""
    deadline = timebase.now_s() + timeout_s
    while True:
        if os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        if timebase.now_s() >= deadline:
            return False
        time.sleep(0.01)


def _run(cmd: list[str], cwd: str, env: dict, stdout_path: Path, stderr_path: Path,
         timeout_s: float) -> tuple[bool, int]:
    """(exited within the timeout, return code); never leaves the child running."""
    with open(stdout_path, "wb") as out, open(stderr_path, "wb") as err:
        kwargs: dict = {"start_new_session": True} if os.name == "posix" else {
            "creationflags": getattr(subprocess, "CREATE_NEW_PROCESS_GROUP", 0)}
        proc = subprocess.Popen(cmd, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env, **kwargs)
        try:
            if os.name == "posix" and hasattr(os, "waitid"):
                exited = _wait_keep_zombie(proc, timeout_s)
                _kill_group(proc)  # also whatever the code left running in the background
            else:
                try:
                    proc.wait(timeout=timeout_s)
                    exited = True
                except subprocess.TimeoutExpired:
                    exited = False
                    _kill_group(proc)
            rc = proc.wait()
        finally:
            if proc.poll() is None:  # an exception above: never leave the child running
                _kill_group(proc)
                proc.wait()
    return exited, rc


def run_tests(code: str, tests: str, entry: str | None = None, timeout_s: float = 10.0,
              unsafe_no_sandbox: bool = False, choice: SandboxChoice | None = None) -> SandboxResult:
    """Execute ``code`` then ``tests`` (asserts that call ``entry``) in a sandboxed child process.

    ``choice`` defaults to :func:`sandbox_choice` (``unsafe_no_sandbox`` = allow running without one)."""
    if timeout_s <= 0:
        raise ValueError(f"code_timeout_s must be > 0, got {timeout_s}")
    choice = choice or sandbox_choice(unsafe_no_sandbox)
    if choice.kind == SKIPPED:
        return SandboxResult(None, None, SKIPPED, choice.reason)
    limits = [str(_MEMORY_MIB), str(int(timeout_s) + 1), str(_FILE_MIB)]
    with tempfile.TemporaryDirectory(prefix="quality-sandbox-") as tmp:
        tmp_path = Path(tmp)
        stdout_path, stderr_path = tmp_path / "stdout.txt", tmp_path / "stderr.txt"
        if choice.kind == BWRAP:
            inputs = tmp_path / "in"
            inputs.mkdir()
            for name, text in (("runner.py", _RUNNER.read_text(encoding="utf-8")), ("solution.py", code),
                               ("tests.py", tests)):
                (inputs / name).write_text(text, encoding="utf-8")
            cmd = [sys.executable, "-I", "-X", "utf8", f"{WORKDIR}/in/runner.py", "in/solution.py", "in/tests.py",
                   entry or "", *limits, str(_NPROC)]
            exited, rc = _run(_bwrap_command(choice.bwrap, inputs, cmd), tmp, _child_env(WORKDIR), stdout_path,
                              stderr_path, timeout_s)
            if rc > 128:  # bwrap reports a child killed by a signal as 128 + signal
                rc = 128 - rc
        else:
            (tmp_path / "solution.py").write_text(code, encoding="utf-8")
            (tmp_path / "tests.py").write_text(tests, encoding="utf-8")
            # No process limit here: RLIMIT_NPROC would count every process of the user.
            cmd = [sys.executable, "-I", "-X", "utf8", str(_RUNNER), "solution.py", "tests.py", entry or "",
                   *limits, "0"]
            exited, rc = _run(cmd, tmp, _child_env(tmp), stdout_path, stderr_path, timeout_s)
        if not exited:
            return SandboxResult(False, f"timeout: tests did not finish within {timeout_s:g} s", choice.kind)
        if rc == 0:
            return SandboxResult(True, None, choice.kind)
        stderr = stderr_path.read_bytes()[-8192:].decode("utf-8", "replace")
    if rc < 0:
        return SandboxResult(False, f"killed by signal {-rc} (resource limit?): {_last_line(stderr)}", choice.kind)
    return SandboxResult(False, _last_line(stderr), choice.kind)
