"""Task names, shared by the collector (cases, req.start ``task``) and the analyzer (quality per task)."""
from __future__ import annotations

TASKS = ("qa", "summary", "code", "creative")

# The seed's task_type names (and a few obvious spellings) -> canonical task.
TASK_ALIASES = {
    "qa": "qa", "knowledge_qa": "qa", "question_answering": "qa", "knowledge": "qa",
    "summary": "summary", "summarization": "summary", "summarisation": "summary", "summarize": "summary",
    "code": "code", "code_generation": "code", "coding": "code", "programming": "code",
    "creative": "creative", "creative_writing": "creative", "writing": "creative", "story": "creative",
}


def canonical_task(name: str) -> str:
    """The canonical name of a task (``knowledge_qa`` -> ``qa``); unknown names are kept as given."""
    return TASK_ALIASES.get(name.strip().lower(), name)
