"""Which GPUs a request's energy counts when several telemetry daemons (GPU hosts) share the bus (pure).

By default (``auto``) the GPUs on the LLM server's host: the host of batch.start ``base_url``, or the
collector's own host when the server is on loopback. ``all`` counts every GPU recorded; otherwise a
comma-separated list of ``host``, ``host/uuid`` or ``uuid`` picks them (``--server-gpus``).
"""
from __future__ import annotations

from urllib.parse import urlsplit

from analyzer.i18n import Msg
from shared import messages as M

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "0.0.0.0", ""}


def server_host(batch_start: M.BatchStart | None) -> str | None:
    """The LLM server's host name as the telemetry names hosts (publisher ids), or None when unknown."""
    if batch_start is None:
        return None
    try:
        host = urlsplit(batch_start.base_url or "").hostname or ""
    except ValueError:
        host = ""
    if host.lower() in LOOPBACK_HOSTS or host.startswith("127."):
        return M.src_host(batch_start.src)
    return host or None


def _matches(gpu, item: str) -> bool:
    host, uuid = M.src_host(gpu.src) or "", str(gpu.meta.get("uuid") or "")
    if "/" in item:
        h, u = item.split("/", 1)
        return host == h and uuid == u
    return item in (host, uuid)


def select(gpus: list, spec: str, batch_start: M.BatchStart | None) -> tuple[list, list[str]]:
    """(the GPUs counted, Problems lines). One host recorded: every GPU, nothing to say."""
    hosts = sorted({M.src_host(g.src) or "" for g in gpus})
    spec = (spec or "auto").strip()
    if spec == "all" or (spec == "auto" and len(hosts) <= 1):
        return list(gpus), []
    if spec == "auto":
        server = server_host(batch_start)
        chosen = [g for g in gpus if server and (M.src_host(g.src) or "").lower() == server.lower()]
        if not chosen:
            return list(gpus), [Msg("p_gpus_no_server_host", n=len(hosts), hosts=", ".join(hosts),
                                    server=server or "?")]
        why = Msg("why_server_host", server=server)
    else:
        items = [x.strip() for x in spec.split(",") if x.strip()]
        chosen = [g for g in gpus if any(_matches(g, x) for x in items)]
        if not chosen:
            return list(gpus), [Msg("p_server_gpus_no_match", spec=spec, recorded=", ".join(_name(g) for g in gpus))]
        why = f"--server-gpus {spec}"
    left = [g for g in gpus if g not in chosen]
    return chosen, [Msg("n_gpus_counted", n=len(chosen), which=", ".join(_name(g) for g in chosen), why=why,
                        left=", ".join(_name(g) for g in left) or "-")]


def _name(g) -> str:
    return f"{M.src_host(g.src) or '?'}/{g.meta.get('uuid') or g.key}"


def pick_host_src(srcs: list[str], batch_start: M.BatchStart | None) -> str:
    """The tel.host source for CPU figures: the server's host when it is recorded, else the first."""
    server = server_host(batch_start)
    for src in srcs:
        if server and (M.src_host(src) or "").lower() == server.lower():
            return src
    return srcs[0]

