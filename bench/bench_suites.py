"""HumanEval end to end: the positive control (the dataset's 164 canonical solutions through the same
scorer and sandbox: all must pass), then SmolLM2-135M on CPU through the demo (real llama.cpp server,
collector, analyzer): pass@1 and J per problem. Small models score near zero; the control shows that
a zero is the model's, not the scorer's. --quick (or GENAI_BENCH_SUITE_LIMIT=N) takes the first N
problems for the model run; the full run is 164 problems."""
from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUICK_LIMIT = 10


def positive_control() -> tuple[int, int, float, list[str]]:
    from analyzer.quality import QualityOptions, assess
    from collector.suites import SuiteSpec, load_items

    items = load_items(SuiteSpec("humaneval"))
    reqs = [{"rid": it["item_id"], "task": "suite", "text": it["canonical_solution"], "thinking": None,
             "reference": None, "lang": "en", "expect": None, "prompt": "", "suite": "humaneval",
             "item_id": it["item_id"], "suite_data": {"kind": "humaneval", **it["suite_data"]}} for it in items]
    started = time.monotonic()
    rows = assess(reqs, QualityOptions(enable_bart=False, code_timeout_s=10))
    took = time.monotonic() - started
    failed = [rid for rid, r in rows.items() if r["correct"] is not True]
    return len(items) - len(failed), len(items), took, failed


def model_run(limit: int | None) -> tuple[list[dict[str, str]], float, str]:
    with tempfile.TemporaryDirectory(prefix="bench-suites-") as tmp:
        cmd = [sys.executable, "-m", "demo", "--suite", "humaneval", "--no-plots", "--out", tmp]
        if limit:
            cmd += ["--limit", str(limit)]
        started = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=6 * 3600)
        took = time.monotonic() - started
        found = sorted(Path(tmp).glob("*/summary/suites.csv"))
        if proc.returncode != 0 or not found:
            return [], took, f"demo exited {proc.returncode}: {(proc.stdout + proc.stderr)[-600:]}"
        with open(found[0], encoding="utf-8-sig", newline="") as fh:
            return list(csv.DictReader(fh)), took, " ".join(cmd[2:]).replace(tmp, "TMP")


def _f(v: str | None, fmt: str) -> str:
    try:
        return format(float(v), fmt)
    except (TypeError, ValueError):
        return "-"


def run(quick: bool = False) -> str:
    passed, total, took, failed = positive_control()
    env_limit = os.environ.get("GENAI_BENCH_SUITE_LIMIT")
    limit = int(env_limit) if env_limit else (QUICK_LIMIT if quick else None)
    board, model_took, how = model_run(limit)
    lines = ["## suites (HumanEval)", "",
             "Positive control: the dataset's canonical solutions through the same extraction, sandbox (bubblewrap) "
             f"and check(): **{passed}/{total} pass** in {took:.1f} s"
             + (f" (FAILED: {', '.join(failed[:10])})" if failed else "") + ".", ""]
    if not board:
        lines.append(f"Model run did not complete: {how}")
        return "\n".join(lines) + "\n"
    lines += [f"Model run: `python -m {how}` ({'first ' + str(limit) + ' problems' if limit else 'all 164 problems'}, "
              f"{model_took / 60:.1f} min). Zero-shot generative, temperature 0, one sample per problem "
              "(pass@1 = accuracy); GPU energy is SIMULATED in the demo, CPU energy is the host's.", "",
              "| model | n | pass@1 | 95% Wilson | J per problem | J per correct |", "|---|---|---|---|---|---|"]
    for r in board:
        lines.append(f"| {r['model']} | {r['n']} | {_f(r.get('accuracy'), '.3f')} | "
                     f"{_f(r.get('accuracy_ci95_low'), '.3f')}–{_f(r.get('accuracy_ci95_high'), '.3f')} | "
                     f"{_f(r.get('j_per_item'), '.1f')} | {_f(r.get('j_per_correct'), '.1f')} |")
    return "\n".join(lines) + "\n"
