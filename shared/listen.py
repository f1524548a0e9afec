"""One rule for the HTTP listeners (the Prometheus exporter, the measuring proxy, the live page).

Every listener takes ``--listen HOST:PORT`` and binds loopback unless the user also passes
``--allow-remote``: the pages and endpoints carry prompts, answers and energy figures and have no
authentication of their own (CURVE protects the bus, not these HTTP listeners), so exposing them is
a decision the user states, and it is logged as a warning. Pure: parsing and the rule; no sockets.
"""
from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass

ALLOW_REMOTE_FLAG = "--allow-remote"


class ListenError(ValueError):
    """A listen address that cannot be used; the message names the flag and the fix."""


@dataclass(frozen=True)
class Listen:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return is_loopback_host(self.host)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def __str__(self) -> str:  # what a user typed, normalised
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def is_loopback_host(host: str) -> bool:
    """True for localhost, 127.0.0.0/8 and ::1; every other name or address counts as exposed."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_listen(text: str, flag: str = "--listen") -> Listen:
    """``HOST:PORT``, ``[v6]:PORT`` or a bare ``PORT`` (loopback) → :class:`Listen`."""
    raw = str(text).strip()
    if raw.isdigit():
        host, port_s = "127.0.0.1", raw
    elif raw.startswith("["):
        host, sep, port_s = raw[1:].partition("]:")
        if not sep:
            raise ListenError(f"{flag} {raw!r}: write an IPv6 address as [ADDR]:PORT, e.g. [::1]:8765")
    else:
        host, sep, port_s = raw.rpartition(":")
        if not sep or not host:
            raise ListenError(f"{flag} {raw!r}: expected HOST:PORT, e.g. 127.0.0.1:8765")
    try:
        port = int(port_s)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise ListenError(f"{flag} {raw!r}: the port must be a number from 0 to 65535")
    return Listen(host, port)


def check_listen(listen: Listen, allow_remote: bool, flag: str = "--listen") -> str | None:
    """Refuse a non-loopback address without ``--allow-remote``; with it, return the warning to log."""
    if listen.loopback:
        return None
    if not allow_remote:
        raise ListenError(f"{flag} {listen}: not a loopback address; this listener has no authentication "
                          f"and shows prompts, answers and energy. Pass {ALLOW_REMOTE_FLAG} to expose it "
                          f"on purpose, or listen on 127.0.0.1")
    return (f"listening on non-loopback {listen} ({ALLOW_REMOTE_FLAG}): anyone who can reach it sees its data; "
            f"it has no authentication of its own, whatever CURVE keys the bus uses")


def add_listen_args(ap: argparse.ArgumentParser, default: str, what: str) -> None:
    """``--listen HOST:PORT`` and ``--allow-remote``, the same words on every listener."""
    ap.add_argument("--listen", default=default, metavar="HOST:PORT",
                    help=f"where {what} listens (default {default}; loopback only unless {ALLOW_REMOTE_FLAG})")
    ap.add_argument(ALLOW_REMOTE_FLAG, action="store_true",
                    help="allow a non-loopback --listen address (no authentication: a warning is logged)")
