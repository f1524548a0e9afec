"""Fixtures shared by every test: zmq contexts that must close, free loopback ports."""
from __future__ import annotations

import os
import sys
from pathlib import Path

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
