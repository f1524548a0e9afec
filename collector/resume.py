"""``--resume`` continues a batch with its own saved settings and cases (pure).

config.json, written at a batch's first start, holds every setting with its source, the resolved
case list and the batch id. A resume uses those, not today's defaults or a config.py edited since:
a flag given on the resume command line that contradicts a saved value is refused, naming the flag
and both values; a case set that would differ is refused too, naming the cases that changed (an
edited test_cases.json is an edit to undo, not a flag to drop).
The batch id comes from config.json too, so a copied or renamed batch keeps its request ids.
"""
from __future__ import annotations

from typing import Any

from collector.settings import SettingsError, case_hash, cli_flag

# Renamed settings keys (older config.json) -> the key now.
LEGACY_KEYS = {"timeout": "timeout_s"}


def saved_settings(saved: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for key, entry in (saved.get("settings") or {}).items():
        out[LEGACY_KEYS.get(key, key)] = entry
    return out


def resume_inputs(saved: dict[str, Any], settings: dict[str, dict[str, Any]], cases: list[dict[str, Any]],
                  cases_from: str, where: str) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The saved (settings, cases) after checking what this command line says against them.

    ``settings``/``cases`` are what this command line resolves to; ``cases_from`` names where those
    cases came from (a flag or file, or "" for the built-in default); ``where`` is config.json's path."""
    old = saved_settings(saved)
    problems = []
    for key, entry in settings.items():
        if entry.get("source") != "cli" or key not in old:
            continue
        if entry["value"] != old[key].get("value"):
            problems.append(f"{cli_flag(key)} {_show(entry['value'])} (this batch was started with "
                            f"{_show(old[key].get('value'))})")
    missing = sorted(k for k in settings if k not in old)
    for key in missing:  # a setting added since the batch started: its current value is used
        old[key] = settings[key]
    old_cases = saved.get("cases")
    if not isinstance(old_cases, list) or not old_cases:
        raise SettingsError(f"{where}: holds no \"cases\" list (written by an older version?); "
                            "start a new batch, or resume with the same inputs as the first run")
    changed = []
    if cases_from and [case_hash(c) for c in cases] != [case_hash(c) for c in old_cases]:
        changed = case_changes(old_cases, cases)
    if problems:
        raise SettingsError(f"--resume keeps the settings saved in {where}; these flags contradict them: "
                            + "; ".join(problems)
                            + ". Drop those flags to resume as started, or start a new batch (--out DIR or another "
                              "--exp-dir) to change them"
                            + (f". Also, {cases_from} changed since the start: " + "; ".join(changed) if changed
                               else ""))
    if changed:
        flag = cases_from.startswith("--")
        raise SettingsError(f"--resume runs the cases the batch was started with (saved in {where}), but "
                            f"{cases_from} {'gives other cases' if flag else 'was edited since'}: "
                            + "; ".join(changed)
                            + (". Drop the flag to resume as started" if flag else
                               ". Undo the edit to resume as started (the saved cases are in config.json)")
                            + ", or start a new batch (--out DIR or another --exp-dir) to run the new cases")
    return old, old_cases


def case_changes(old: list[dict[str, Any]], new: list[dict[str, Any]], limit: int = 5) -> list[str]:
    """Which cases differ, by position: "case [1] (qa, short): prompt changed", "case [3] added"."""
    out = []
    for i in range(max(len(old), len(new))):
        if i >= len(new):
            out.append(f"case [{i}] ({_case_name(old[i])}) removed")
        elif i >= len(old):
            out.append(f"case [{i}] ({_case_name(new[i])}) added")
        elif case_hash(old[i]) != case_hash(new[i]):
            what = [k for k in ("task", "load", "lang", "prompt") if old[i].get(k) != new[i].get(k)]
            out.append(f"case [{i}] ({_case_name(old[i])}): {', '.join(what)} changed")
    if len(out) > limit:
        out = out[:limit] + [f"… {len(out) - limit} more"]
    return out


def _case_name(case: dict[str, Any]) -> str:
    prompt = str(case.get("prompt") or "")
    short = prompt[:30].replace("\n", " ") + ("…" if len(prompt) > 30 else "")
    return f"{case.get('task_type') or case.get('task')}, {case.get('load')}: {short!r}"


def _show(v: Any) -> str:
    return " ".join(map(str, v)) if isinstance(v, list) else str(v)
