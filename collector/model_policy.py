"""Per-model batch policy (pure): what a model's next request sends after earlier ones degraded,
and whether the model's remaining requests are skipped.

Values an out-of-memory retry forced down (num_ctx, max_tokens) stay down for the model's later
requests, so the batch does not hit the same OOM on every request; they are recorded in each
request's params. A 404 (model not on the server) skips the model's remaining requests.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from collector import failures as F
from collector.backends import Params
from collector.plan import params_for


@dataclass
class ModelPolicy:
    settings: dict[str, dict[str, Any]]
    sticky: dict[str, Any] = field(default_factory=dict)
    skipped: bool = False

    def params(self, case: dict[str, Any], run: int | None = None) -> Params:
        """The case's parameters (run ``run``) with the model's sticky lowered values applied."""
        p = params_for(case, self.settings, run)
        for key, value in self.sticky.items():
            if key == "num_ctx" or (key == "max_tokens" and (p.max_tokens is None or p.max_tokens > value)):
                setattr(p, key, value)
        return p

    def warmup_params(self, case: dict[str, Any], max_tokens: int) -> Params:
        p = self.params(case)
        p.max_tokens = min(p.max_tokens or max_tokens, max_tokens)
        return p

    def remember(self, degraded: dict[str, Any] | None, error_kind: str | None, warmup: bool = False) -> None:
        """Keep what a request that did not end in OOM had to lower (a warm-up's short max_tokens
        says nothing about the model's real requests, so only its num_ctx is kept)."""
        if error_kind == F.OOM:
            return
        for key in ("num_ctx",) if warmup else ("num_ctx", "max_tokens"):
            if key in (degraded or {}):
                self.sticky[key] = degraded[key]

    def after(self, error_kind: str | None) -> bool:
        """Record a request's outcome; True when the model's remaining requests are now skipped."""
        if error_kind == F.NOT_FOUND and not self.skipped:
            self.skipped = True
            return True
        return False
