"""Benchmark statistics (pure): Wilson interval of an accuracy, the unbiased pass@k estimator, and the
per model × suite figures of stats.csv (accuracy, pass@k, energy per item and per correct answer)."""
from __future__ import annotations

import math
from typing import Any

from shared.numbers import finite

Z95 = 1.959963984540054  # two-sided 95 % normal quantile


def wilson(correct: int, n: int, z: float = Z95) -> tuple[float | None, float | None]:
    """The Wilson score interval of a binomial proportion (it stays inside [0, 1], unlike the normal
    interval, and is right for small n and accuracies near 0 or 1). (None, None) for n = 0."""
    if n <= 0:
        return None, None
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be in 0..n, got {correct} of {n}")
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased estimator of the HumanEval paper (Chen et al. 2021): 1 − C(n−c, k) / C(n, k), the
    chance that at least one of k samples drawn from the n generated (c of them right) is right."""
    if not (0 <= c <= n) or k < 1 or k > n:
        raise ValueError(f"pass@k needs 0 ≤ c ≤ n and 1 ≤ k ≤ n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    # the product form, numerically stable (no huge binomials)
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def _bool(v: Any) -> bool | None:
    if isinstance(v, bool):
        return v
    if isinstance(v, str) and v.lower() in ("true", "false"):
        return v.lower() == "true"
    return None


def suite_figures(rows: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(metric, values) for one model × suite group of successful rows: accuracy (Wilson 95 %),
    accuracy_strict where the suite has a strict rule, pass@1 and pass@k (k = the smallest number of
    samples every item has, when ≥ 2), j_per_item (mean energy per request) and j_per_correct (all
    energy ÷ correct answers). Rows without a ``correct`` (reference suites) give none of these."""
    scored = [r for r in rows if _bool(r.get("correct")) is not None]
    out: list[tuple[str, dict[str, Any]]] = []
    if not scored:
        return out
    n = len(scored)
    right = sum(1 for r in scored if _bool(r.get("correct")))
    low, high = wilson(right, n)
    wil = {"ci95_note": "wilson"}
    out.append(("accuracy", {"n": n, "mean": right / n, "ci95_low": low, "ci95_high": high, **wil}))
    strict = [r for r in scored if _bool(r.get("correct_strict")) is not None]
    if strict:
        s_right = sum(1 for r in strict if _bool(r.get("correct_strict")))
        s_low, s_high = wilson(s_right, len(strict))
        out.append(("accuracy_strict", {"n": len(strict), "mean": s_right / len(strict), "ci95_low": s_low,
                                        "ci95_high": s_high, **wil}))
    per_item: dict[str, list[bool]] = {}
    for r in scored:
        per_item.setdefault(str(r.get("item_id")), []).append(bool(_bool(r.get("correct"))))
    samples = min(len(v) for v in per_item.values())
    for k in sorted({1, samples}) if samples >= 2 else ():
        vals = [pass_at_k(len(v), sum(v), k) for v in per_item.values()]
        out.append((f"pass@{k}", {"n": len(vals), "mean": math.fsum(vals) / len(vals), "ci95_note": f"{samples} samples/item"}))
    energy = [e for r in scored if (e := finite(r.get("total_energy_j"))) is not None]
    if energy and len(energy) == n:  # every request's energy known: else the sums would mislead
        out.append(("j_per_item", {"n": n, "mean": math.fsum(energy) / n}))
        out.append(("j_per_correct", {"n": right, "mean": math.fsum(energy) / right if right else None,
                                      "ci95_note": None if right else "no correct answer"}))
    return out
