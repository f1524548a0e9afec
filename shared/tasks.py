"""Task names, shared by the collector (cases, req.start ``task``) and the analyzer (quality per task)."""
from __future__ import annotations

import difflib
import keyword
import re

TASKS = ("qa", "summary", "code", "creative")

# The seed's task_type names (and a few obvious spellings) -> canonical task.
TASK_ALIASES = {
    "qa": "qa", "knowledge_qa": "qa", "question_answering": "qa", "knowledge": "qa",
    "summary": "summary", "summarization": "summary", "summarisation": "summary", "summarize": "summary",
    "code": "code", "code_generation": "code", "coding": "code", "programming": "code",
    "creative": "creative", "creative_writing": "creative", "writing": "creative", "story": "creative",
}


# Task kinds that are not quality tasks of their own but are still known: a benchmark suite's items
# (scored by the suite's rule) and requests recorded through the proxy (no case, no quality check).
SUITE_TASK = "suite"
PROXY_TASK = "proxy"
KNOWN_TASKS = TASKS + (SUITE_TASK, PROXY_TASK)
UNKNOWN_SCORING = ("text statistics only (length, distinct-n, repetition): no quality_score, so no 效质比; "
                   "chrF/ROUGE-L columns are filled where the case has a reference_text")


def _spelling(name: str) -> str:
    return re.sub(r"[\s\-]+", "_", name.strip().lower())


def canonical_task(name: str) -> str:
    """The canonical name of a task (``knowledge_qa`` or ``Knowledge-QA`` -> ``qa``); unknown names are
    kept as given."""
    return TASK_ALIASES.get(_spelling(name), name)


def is_known_task(name: str | None) -> bool:
    """True for the four quality tasks (any alias), a suite's task and the proxy's."""
    return bool(name) and canonical_task(str(name)) in KNOWN_TASKS


def closest_task(name: str) -> str | None:
    """The known task name (or alias) an unknown name most likely meant, or None."""
    close = difflib.get_close_matches(_spelling(name), list(TASK_ALIASES), n=1, cutoff=0.6)
    return close[0] if close else None


def unknown_task_note(name: str) -> str:
    """What a user must hear about an unknown task: that it is unknown, the closest known name, and how
    its answers will be scored."""
    close = closest_task(name)
    hint = f" (did you mean {close!r}?)" if close else ""
    return (f"task {name!r} is not a known task{hint}; known: {', '.join(TASKS)} (and their aliases), "
            f"{SUITE_TASK} items and {PROXY_TASK} requests. Its answers get {UNKNOWN_SCORING}")


# Python keywords a code case's expect.symbols may name (checked as keywords in the code, not as names).
PY_KEYWORDS = frozenset(keyword.kwlist) | frozenset(getattr(keyword, "softkwlist", ()))
_DEF_SPEC = re.compile(r"(?:async\s+)?(def|class)\s+([A-Za-z_]\w*)")


def symbol_spec_problem(spec: object) -> str | None:
    """Why one expect.symbols entry can never be checked (None when it can). An entry lists
    alternatives separated by '|'; each is an identifier, a Python keyword (``while``) or
    ``def NAME`` / ``class NAME`` (the code defines it)."""
    if not isinstance(spec, str) or not spec.strip():
        return f"expect.symbols entry {spec!r} must be a non-empty string"
    for alt in (a.strip() for a in spec.split("|")):
        if not alt:
            return f"expect.symbols entry {spec!r} has an empty alternative; write 'low|left'"
        if re.fullmatch(r"[A-Za-z_]\w*", alt) or _DEF_SPEC.fullmatch(alt):
            continue
        return (f"expect.symbols entry {alt!r} can never match: give a name ('mid'), a Python keyword ('while') "
                "or 'def NAME' / 'class NAME'")
    return None


def unknown_task_notes(tasks) -> list[str]:
    """One note per distinct unknown task among ``tasks`` (names, or case dicts with ``task``/``task_type``)."""
    return [unknown_task_note(n) for n in unknown_tasks(tasks)]


def unknown_tasks(tasks) -> list[str]:
    """The distinct unknown task names among ``tasks`` (names, or case dicts), in order."""
    seen: list[str] = []
    for t in tasks:
        name = (t.get("task_type") or t.get("task")) if isinstance(t, dict) else t
        if isinstance(t, dict) and t.get("suite"):
            continue
        if name is not None and not is_known_task(str(name)) and str(name) not in seen:
            seen.append(str(name))
    return seen
