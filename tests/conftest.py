"""Fixtures shared by every test: zmq contexts that must close, free loopback ports, and the one rule for
tests that need a system part the project does not install (bubblewrap, Chromium)."""
from __future__ import annotations

import os
import shutil
import sys
import time
from pathlib import Path
from typing import Callable, NoReturn

import pytest
import zmq
from hypothesis import HealthCheck, settings

# Fuzz tests (hypothesis): a few dozen examples each in `make test` (seconds in all); `make fuzz` runs
# the same tests with --hypothesis-profile=fuzz, a hundred times more. No deadline: the machine is shared.
settings.register_profile("quick", max_examples=40, deadline=None, database=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("fuzz", max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("quick")

ROOT = Path(__file__).resolve().parent.parent
# Tests never reach a model hub (nor any host but loopback); every subprocess inherits this.
# The one test of the network probe unsets it and points the hub at a closed local port.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from shared.bus import free_port  # noqa: E402  (tests import it from here)


@pytest.fixture
def zctx():
    """A zmq context whose sockets all get closed; fails loudly if it will not terminate."""
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def endpoint():
    return f"tcp://127.0.0.1:{free_port()}"


def watch_handshake(sock: zmq.Socket) -> Callable[[float], None]:
    """Watch ``sock`` for its first completed connection (call this before its peer can be there); returns
    ``wait(timeout_s)``, which returns once it happened or fails the test. A SUB's subscriptions go out right
    after it: a publisher heard from then on reaches it, where a fixed sleep is a guess on a busy machine."""
    from zmq.utils.monitor import recv_monitor_message

    mon = sock.get_monitor_socket(zmq.EVENT_HANDSHAKE_SUCCEEDED)

    def wait(timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        try:
            while (left := deadline - time.monotonic()) > 0:
                if mon.poll(int(left * 1000)) and recv_monitor_message(mon)["event"] == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    return
            pytest.fail(f"no connection within {timeout_s} s")
        finally:
            sock.disable_monitor()
            mon.close(linger=0)
    return wait


# System parts some tests drive (not Python packages): on a fresh machine they skip with the reason
# and the install line; under CI (CI=true, .ci/run installs both) a missing one fails the run instead.
BWRAP_INSTALL = "apt-get install -y bubblewrap (Debian/Ubuntu; Fedora: dnf install bubblewrap)"
CHROMIUM_INSTALL = "apt-get install -y chromium (Debian/Ubuntu), or set CHROMIUM to the browser binary"
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("1", "true", "yes")


def missing_system_part(what: str, why: str, install: str, ci_fails: bool = True) -> NoReturn:
    """Skip this test: ``what`` is missing (``why``), with the line that installs it. Under CI it fails."""
    msg = f"needs {what}, which is not usable here: {why}. Install: {install}"
    if ci_fails and in_ci():
        pytest.fail(f"CI=true: {msg} (.ci/run installs it; a CI run never skips this quietly)", pytrace=False)
    pytest.skip(msg)


def require_sandbox():
    """The code-test sandbox (bubblewrap) as analyzer.quality.sandbox detects it; skip/fail per the rule above.
    Elsewhere than Linux there is no bwrap at all: a skip even under CI."""
    from analyzer.quality import sandbox

    choice = sandbox.sandbox_choice()
    if choice.kind != sandbox.BWRAP:
        missing_system_part("the code-test sandbox (bubblewrap)", choice.reason or "no sandbox", BWRAP_INSTALL,
                            ci_fails=sys.platform == "linux")
    return choice


def require_chromium() -> str:
    """The headless browser binary (env CHROMIUM overrides the PATH search); skip/fail per the rule above."""
    found = os.environ.get("CHROMIUM") or next((p for p in map(shutil.which, CHROMIUM_NAMES) if p), None)
    if not found:
        missing_system_part("headless Chromium (the report.html browser test)",
                            f"none of {', '.join(CHROMIUM_NAMES)} on PATH and no env CHROMIUM", CHROMIUM_INSTALL)
    return found


@pytest.fixture
def sandbox_choice():
    """The working bwrap sandbox, or the test is skipped (fails under CI) with the install line."""
    return require_sandbox()


def pytest_configure(config):
    # A test run started with SIGINT ignored (``make test &`` from a script) would pass the ignore on to
    # every child the tests stop with SIGINT: restored here, as our entry points do (shared.procs).
    from shared.procs import ctrl_c_interrupts

    ctrl_c_interrupts()
