"""The retry decision (pure): after a failed attempt, retry unchanged, retry degraded, or stop.

| kind      | action                                                         |
|-----------|----------------------------------------------------------------|
| busy      | wait (doubling from ``backoff_s``), retry unchanged, bounded    |
| oom       | lower num_ctx (halving), then max_tokens; retry, bounded        |
| no_think  | retry without ``think``                                        |
| other     | stop: the attempt's failure is the request's                   |
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector import failures as F
from collector.backends import Params


@dataclass
class RetryPolicy:
    busy_retries: int = 4            # 503: back off and retry unchanged
    backoff_s: float = 0.5           # first wait; doubles each time
    backoff_max_s: float = 8.0
    degrade_steps: int = 6           # OOM: how many times to lower num_ctx / max_tokens
    min_num_ctx: int = 512
    min_max_tokens: int = 16
    start_num_ctx: int = 4096        # assumed when num_ctx was not set and an OOM asks to lower it


def degrade(p: Params, policy: RetryPolicy, can_set_ctx: bool) -> dict[str, Any] | None:
    """Lower num_ctx (halving, not below the floor), then max_tokens; None when nothing is left."""
    if can_set_ctx:
        ctx = p.num_ctx if p.num_ctx is not None else policy.start_num_ctx * 2
        if ctx > policy.min_num_ctx:
            p.num_ctx = max(policy.min_num_ctx, ctx // 2)
            return {"num_ctx": p.num_ctx}
    if p.max_tokens is not None and p.max_tokens > policy.min_max_tokens:
        p.max_tokens = max(policy.min_max_tokens, p.max_tokens // 2)
        return {"max_tokens": p.max_tokens}
    if p.max_tokens is None:
        p.max_tokens = 256
        return {"max_tokens": p.max_tokens}
    return None


@dataclass
class Retrier:
    """One request's retry state. ``params`` is changed in place when an OOM degrades it."""

    policy: RetryPolicy
    params: Params
    can_set_ctx: bool
    retries: int = 0
    degraded: dict[str, Any] = field(default_factory=dict)
    _busy: int = 0
    _degrades: int = 0
    _reconnected: bool = False

    def after(self, kind: str | None) -> dict[str, Any] | None:
        """What to do after an attempt that failed with ``kind``: a note such as ``{"wait_s": 0.5}``
        or ``{"num_ctx": 1024}`` (retry; wait first when it says so), or None (stop)."""
        note = None
        if kind == F.BUSY and self._busy < self.policy.busy_retries:
            note = {"wait_s": min(self.policy.backoff_max_s, self.policy.backoff_s * (2 ** self._busy))}
            self._busy += 1
        elif kind == F.OOM and self._degrades < self.policy.degrade_steps:
            note = degrade(self.params, self.policy, self.can_set_ctx)
            if note is not None:
                self._degrades += 1
                self.degraded.update(note)
        elif kind == F.NO_THINK and self.params.think is not None:
            self.params.think = self.degraded["think"] = None
            note = {"think": None}
        if note is not None:
            self.retries += 1
        return note

    def reconnect(self) -> bool:
        """A pooled connection the server had already closed: reconnect once per request."""
        if self._reconnected:
            return False
        self._reconnected = True
        self.retries += 1
        return True
