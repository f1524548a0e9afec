"""Batch settings from CLI, ``config.py`` (read as data with ``ast``, never executed) and
defaults, each value remembered with its source; and ``test_cases.json`` loading/validation.

Precedence: an explicit CLI flag > a per-case value in test_cases.json (max_tokens,
temperature) > config.py > built-in default.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

from collector.backends import BACKENDS
from collector.handwritten import FileTextError, json_slips, line_of, nearest, read_text
from collector.tasks import LANGS, LOADS, TASKS
from shared.tasks import TASK_ALIASES, canonical_task, symbol_spec_problem


class SettingsError(ValueError):
    """A bad config.py / test_cases.json / flag; the message names file, line/index, field and fix.

    ``file`` is set when the problem is in a file that --use-default-on-error could replace."""

    def __init__(self, message: str, file: Path | None = None):
        super().__init__(message)
        self.file = file


DEFAULTS: dict[str, Any] = {
    "models": ["all"],
    "tasks": list(TASKS),
    "loads": list(LOADS),
    "langs": list(LANGS),
    "runs": 1,
    "max_tokens": 256,
    "temperature": 0.7,
    "top_p": None,
    "num_ctx": None,
    "seed": None,
    "keep_alive": "0s",
    "warmup": False,
    "think": "auto",
    "backend": "ollama",
    "base_url": None,
    "timeout_s": 600.0,
    "concurrency": 1,
    "prompt_cache": "off",
    # load (collector.arrivals, docs/collector.md "Load sweeps"); None/defaults = the seed's serial run
    "request_rate": None,
    "arrival": "poisson",
    "arrival_seed": 0,
    "max_concurrency": None,
    "sweep": None,
    "sweep_order": "given",
    "cooldown_s": 0.0,
    "goodput": None,
    "ignore_eos": False,
    "cpu_tdp_w": None,
}

# Settings an environment variable may set (the seed's CPU_TDP_W): below config.py, above the default.
ENV_NAMES = {"cpu_tdp_w": "CPU_TDP_W"}

SWEEP_KINDS = ("concurrency", "rate")
GOODPUT_KEYS = ("ttft", "tpot", "e2el")  # vLLM's --goodput keys, milliseconds

# config.py names (the seed's spellings first) -> setting key
CONFIG_PY_NAMES = {
    "TEMPERATURE": "temperature", "TOP_P": "top_p", "NUM_CTX": "num_ctx", "SEED": "seed",
    "KEEPALIVE": "keep_alive", "KEEP_ALIVE": "keep_alive", "WARMUP": "warmup", "RUNS": "runs",
    "MAX_TOKENS": "max_tokens", "MODELS": "models", "TASKS": "tasks", "LOADS": "loads", "LANGS": "langs",
    "THINK": "think", "BACKEND": "backend", "BASE_URL": "base_url", "TIMEOUT": "timeout_s",
    "CONCURRENCY": "concurrency", "PROMPT_CACHE": "prompt_cache", "REQUEST_RATE": "request_rate",
    "ARRIVAL": "arrival", "ARRIVAL_SEED": "arrival_seed", "MAX_CONCURRENCY": "max_concurrency", "SWEEP": "sweep",
    "SWEEP_ORDER": "sweep_order", "COOLDOWN_S": "cooldown_s", "GOODPUT": "goodput", "IGNORE_EOS": "ignore_eos",
    "CPU_TDP_W": "cpu_tdp_w",
}
# Flags whose spelling is not derived from the key by cli_flag's rule.
FLAG_NAMES = {"cooldown_s": "--cooldown-s"}

# test_cases.json fields (the seed's first); "task" is an alias of "task_type"
CASE_KEYS = ("model", "prompt", "task_type", "reference_text", "max_tokens", "temperature", "top_p", "num_ctx",
             "seed", "load", "lang", "options", "expect", "think", "task", "suite")
NOTE_KEYS = ("note", "comment", "description", "id")  # a person's notes: kept in the file, not used


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def check_value(key: str, value: Any, where: str) -> Any:
    """Validate one setting; ``where`` names the file/line or flag for the error message."""
    def fail(want: str) -> SettingsError:
        return SettingsError(f"{where}: {key} = {value!r} is invalid; expected {want}")

    if value is None and DEFAULTS.get(key, 0) is None:
        return None
    if key == "temperature":
        if not _is_num(value) or not 0 <= value <= 2:
            raise fail("a number between 0 and 2")
        return float(value)
    if key == "top_p":
        if not _is_num(value) or not 0 < value <= 1:
            raise fail("a number in (0, 1]")
        return float(value)
    if key in ("num_ctx", "max_tokens", "runs", "concurrency", "max_concurrency"):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise fail("a positive integer")
        return value
    if key == "request_rate":
        if not _is_num(value) or not value > 0:
            raise fail("a positive number of requests per second")
        return float(value)
    if key == "cooldown_s":
        if not _is_num(value) or value < 0:
            raise fail("a number of seconds >= 0")
        return float(value)
    if key == "arrival":
        if value not in ("poisson", "constant"):
            raise fail('"poisson" or "constant"')
        return value
    if key == "sweep_order":
        if value not in ("given", "random"):
            raise fail('"given" or "random"')
        return value
    if key == "ignore_eos":
        if not isinstance(value, bool):
            raise fail("True or False")
        return value
    if key == "sweep":
        return parse_sweep(value, fail)
    if key == "goodput":
        return parse_goodput(value, fail)
    if key in ("seed", "arrival_seed"):
        if not isinstance(value, int) or isinstance(value, bool):
            raise fail("an integer")
        return value
    if key == "keep_alive":
        if not (isinstance(value, str) or _is_num(value)):
            raise fail('a duration string like "0s", "5m" or a number of seconds')
        return value
    if key == "warmup":
        if not isinstance(value, bool):
            raise fail("True or False")
        return value
    if key == "think":
        if value in (True, "on", "true"):
            return "on"
        if value in (False, "off", "false"):
            return "off"
        if value in ("auto", None):
            return "auto"
        raise fail('"on", "off" or "auto"')
    if key == "backend":
        if value not in BACKENDS:
            raise fail(" or ".join(BACKENDS))
        return value
    if key == "base_url":
        if not isinstance(value, str):
            raise fail("a URL string such as http://127.0.0.1:11434")
        return value
    if key == "prompt_cache":
        if value in (True, "on"):
            return "on"
        if value in (False, "off"):
            return "off"
        raise fail('"on" or "off"')
    if key == "cpu_tdp_w":
        if not _is_num(value) or value <= 0:
            raise fail("the CPU's TDP in watts, a positive number such as 65")
        return float(value)
    if key == "timeout_s":
        if not _is_num(value) or value <= 0:
            raise fail("a positive number of seconds")
        return float(value)
    if key in ("models", "tasks", "loads", "langs"):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, (list, tuple)) or not value or not all(isinstance(x, str) and x for x in value):
            raise fail("a non-empty list of names")
        allowed = {"tasks": TASKS, "loads": LOADS, "langs": LANGS}.get(key)
        if allowed:
            bad = [x for x in value if x not in allowed]
            if bad:
                raise fail(f"names from {', '.join(allowed)} (unknown: {', '.join(bad)})")
        return list(value)
    raise SettingsError(f"{where}: unknown setting {key!r}")


def parse_sweep(value: Any, fail) -> dict[str, Any]:
    """``"concurrency=1,2,4"`` / ``"rate=0.5,1"`` (or the saved ``{"kind", "levels"}``) to
    ``{"kind": ..., "levels": [...]}``: concurrency levels are positive integers, rates positive numbers."""
    if isinstance(value, dict):
        kind, levels = value.get("kind"), value.get("levels")
    elif isinstance(value, str) and "=" in value:
        kind, _, text = value.partition("=")
        kind = kind.strip()
        try:
            levels = [float(x) for x in text.split(",") if x.strip()]
        except ValueError:
            raise fail("KIND=L1,L2,... with numbers, e.g. concurrency=1,2,4,8 or rate=0.5,1,2") from None
    else:
        raise fail("KIND=L1,L2,... e.g. concurrency=1,2,4,8 or rate=0.5,1,2")
    if kind not in SWEEP_KINDS:
        raise fail(f"a sweep over {' or '.join(SWEEP_KINDS)} (e.g. concurrency=1,2,4,8), not {kind!r}")
    if not isinstance(levels, list) or not levels or not all(_is_num(v) and v > 0 for v in levels):
        raise fail("at least one level, every level > 0")
    if kind == "concurrency":
        if not all(float(v).is_integer() for v in levels):
            raise fail("whole numbers of parallel requests, e.g. concurrency=1,2,4,8")
        levels = [int(v) for v in levels]
    else:
        levels = [float(v) for v in levels]
    if len(set(levels)) != len(levels):
        raise fail("each level once")
    return {"kind": kind, "levels": levels}


def parse_goodput(value: Any, fail) -> dict[str, float]:
    """``["ttft:500", "tpot:50"]`` (vLLM's spelling, ms) or ``{"ttft": 500}`` to ``{key: ms}``."""
    if isinstance(value, str):
        value = value.split()
    if isinstance(value, (list, tuple)):
        out: dict[str, Any] = {}
        for item in value:
            key, sep, ms = str(item).partition(":")
            if not sep:
                raise fail("KEY:MS pairs such as ttft:500 tpot:50 e2el:10000")
            try:
                out[key.strip()] = float(ms)
            except ValueError:
                raise fail(f"a number of milliseconds after {key}:") from None
        value = out
    if not isinstance(value, dict) or not value:
        raise fail("KEY:MS pairs such as ttft:500 tpot:50 e2el:10000")
    bad = [k for k in value if k not in GOODPUT_KEYS]
    if bad:
        raise fail(f"SLO keys from {', '.join(GOODPUT_KEYS)} (unknown: {', '.join(map(str, bad))})")
    if not all(_is_num(v) and v > 0 for v in value.values()):
        raise fail("every SLO a positive number of milliseconds")
    return {k: float(value[k]) for k in GOODPUT_KEYS if k in value}


def _read(path: Path, info: dict | None) -> str:
    try:
        text, encoding = read_text(path)
    except OSError as exc:
        raise SettingsError(f"{path}: cannot read ({exc})", file=path) from exc
    except FileTextError as exc:
        raise SettingsError(str(exc), file=path) from exc
    if info is not None:
        info["encoding"] = encoding
        # a line to check by eye: GBK decodes some other encodings too, as nonsense
        info["sample"] = next((f"line {i}: {line.strip()[:60]}" for i, line in enumerate(text.splitlines(), 1)
                               if not line.isascii()), None)
    return text


def read_config_py(path: Path, warn=None, info: dict | None = None) -> dict[str, tuple[Any, int]]:
    """``{setting_key: (value, line)}`` from a config.py of literal assignments (never executed).

    Every problem of the file is reported at once. ``info`` (optional) receives the file's encoding."""
    src = _read(path, info)
    try:
        with warnings.catch_warnings():  # "invalid escape sequence" is Python's advice, not ours to print
            warnings.simplefilter("ignore")
            tree = ast.parse(src, filename=str(path))
    except SyntaxError as exc:
        raise SettingsError(f"{path}:{exc.lineno}: syntax error: {exc.msg}", file=path) from exc
    except (ValueError, RecursionError, MemoryError) as exc:  # found by fuzzing: NUL bytes, "----…1"
        raise SettingsError(f"{path}: cannot be parsed ({type(exc).__name__}: {str(exc)[:200]}); "
                            "config.py holds only `NAME = literal` lines", file=path) from exc
    out: dict[str, tuple[Any, int]] = {}
    errors: list[str] = []
    for node in tree.body:
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            continue  # a docstring
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if len(targets) != 1 or not isinstance(targets[0], ast.Name) or node.value is None:
                errors.append(f"{path}:{node.lineno}: only `NAME = literal` assignments are allowed")
                continue
            name = targets[0].id
            try:
                value = ast.literal_eval(node.value)
            # TypeError: found by fuzzing, {[1]: 2} (an unhashable key); deep nesting: RecursionError
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                errors.append(f"{path}:{node.lineno}: {name} must be a literal (number, string, True/False, list); "
                              f"config.py is read as data and never executed")
                continue
            key = CONFIG_PY_NAMES.get(name)
            if key is None:
                guess = nearest(name, CONFIG_PY_NAMES)
                if guess is not None:  # a typo would silently measure with the default: refuse it
                    errors.append(f"{path}:{node.lineno}: unknown name {name}; did you mean {guess}?")
                elif warn:
                    warn("config_py_unknown_name", file=str(path), line=node.lineno, name=name,
                         known=sorted(CONFIG_PY_NAMES), effect="ignored")
                continue
            try:
                out[key] = (check_value(key, value, f"{path}:{node.lineno}"), node.lineno)
            except SettingsError as exc:
                errors.append(str(exc))
            continue
        errors.append(
            f"{path}:{getattr(node, 'lineno', '?')}: {type(node).__name__} statement is not allowed; "
            "config.py may hold only `NAME = literal` assignments (it is read as data, never executed)")
    if errors:
        raise SettingsError(_joined_errors(path, errors), file=path)
    return out


def _joined_errors(path: Path, errors: list[str]) -> str:
    if len(errors) == 1:
        return errors[0]
    return f"{path}: {len(errors)} problems:\n  " + "\n  ".join(errors)


def cli_flag(key: str) -> str:
    """The command-line flag of a setting (keys carry their unit; the seed's flags do not)."""
    return FLAG_NAMES.get(key) or "--" + key.removesuffix("_s").replace("_", "-")


def resolve_settings(cli: dict[str, Any], config_py: dict[str, tuple[Any, int]] | None,
                     config_py_path: Path | None = None, env: dict[str, str] | None = None
                     ) -> dict[str, dict[str, Any]]:
    """``{key: {"value": v, "source": "cli" | "config.py" | "env NAME" | "default"}}`` for every setting."""
    env = os.environ if env is None else env
    out = {}
    for key, default in DEFAULTS.items():
        var = ENV_NAMES.get(key)
        if cli.get(key) is not None:
            out[key] = {"value": check_value(key, cli[key], cli_flag(key)), "source": "cli"}
        elif config_py and key in config_py:
            value, line = config_py[key]
            out[key] = {"value": value, "source": "config.py", "line": line}
        elif var and env.get(var) not in (None, ""):
            try:
                value = float(env[var])
            except ValueError:
                value = env[var]
            out[key] = {"value": check_value(key, value, f"environment {var}"), "source": f"env {var}"}
        else:
            out[key] = {"value": default, "source": "default"}
    return out


def _model_spec(value: Any, where: str) -> list[str] | str:
    if value == "all":
        return "all"
    if isinstance(value, str) and value:
        return [value]
    if isinstance(value, list) and value and all(isinstance(x, str) and x for x in value):
        return list(value)
    raise SettingsError(f'{where}: field "model" must be a model name, a list of names, or "all"; got {value!r}')


def _guess_lang(text: str) -> str:
    return "zh" if any("\u4e00" <= ch <= "\u9fff" for ch in text) else "en"


def _guess_load(text: str) -> str:
    # rough, by characters: short questions, a paragraph, a long document
    n = len(text)
    return "short" if n < 300 else "medium" if n < 1500 else "long"


TASK_NAME_RULE = (r"[\w.\-]+")  # \w: letters and digits of any script (翻译 is a name), and "_"


def _item_lines(text: str, raw: Any) -> list[tuple[int, dict[str, int]]]:
    """(line of the item, {key: line}) for each case of a valid JSON text, for the messages."""
    dec = json.JSONDecoder()
    i = 0
    if isinstance(raw, dict):
        m = re.search(r'"cases"\s*:\s*\[', text)
        if m is None:
            return []
        i = m.end() - 1
    i = text.index("[", i) + 1
    out = []
    try:
        while True:
            while text[i].isspace() or text[i] == ",":
                i += 1
            if text[i] == "]":
                return out
            item, end = dec.raw_decode(text, i)
            keys = {}
            if isinstance(item, dict):
                for k in item:
                    m = re.compile(re.escape(json.dumps(k, ensure_ascii=False)) + r"\s*:").search(text, i, end)
                    keys[k] = line_of(text, m.start() if m else i)
            out.append((line_of(text, i), keys))
            i = end
    except (IndexError, ValueError):
        return out


def load_test_cases(path: Path, warn=None, info: dict | None = None) -> list[dict[str, Any]]:
    """Read and validate a test_cases.json (seed format); return normalised cases.

    Each case gets ``task`` (canonical), ``task_type`` (as written), ``load``, ``lang``,
    ``models`` (list or "all"; absent = the batch's model list), and a ``sources`` map telling
    which fields came from the file. Every problem of the file is reported at once, each with its
    line; ``info`` (optional) receives the file's encoding.
    """
    text = _read(path, info)
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        slips = json_slips(text)
        if slips:
            raise SettingsError(_joined_errors(path, [f"{path}:{line}: {what}" for line, what in slips]),
                                file=path) from exc
        raise SettingsError(f"{path}:{exc.lineno}:{exc.colno}: not valid JSON: {exc.msg}", file=path) from exc
    except (ValueError, RecursionError) as exc:  # found by fuzzing: an integer of 5000 digits, [[[[…]]]]
        raise SettingsError(f"{path}: not usable JSON ({type(exc).__name__}: {str(exc)[:200]}); "
                            "numbers must be ordinary and nesting shallow", file=path) from exc
    if isinstance(raw, dict) and isinstance(raw.get("cases"), list):
        items = raw["cases"]
    else:
        items = raw
    if not isinstance(items, list) or not items:
        raise SettingsError(f"{path}: expected a non-empty JSON list of case objects", file=path)
    lines = _item_lines(text, raw)
    cases = []
    errors: list[str] = []
    for i, item in enumerate(items):
        item_line, key_lines = lines[i] if i < len(lines) else (None, {})

        def where(key: str | None = None) -> str:
            line = key_lines.get(key, item_line) if key else item_line
            return f"{path}:{line}: case [{i}]" if line else f"{path}: case [{i}]"

        if not isinstance(item, dict):
            errors.append(f"{where()}: expected an object, got {type(item).__name__}")
            continue
        if "suite" in item:  # a benchmark suite's items as cases (collector/suites.py)
            try:
                cases.extend(_suite_entry(item, path, where()))
            except SettingsError as exc:
                errors.append(str(exc))
            continue
        case, case_errors = _case_from(item, i, where, warn)
        errors.extend(case_errors)
        if not case_errors:
            cases.append(case)
    if errors:
        raise SettingsError(_joined_errors(path, errors), file=path)
    return cases


def _case_from(item: dict[str, Any], i: int, where, warn) -> tuple[dict[str, Any], list[str]]:
    """One case object -> (normalised case, its problems)."""
    errors: list[str] = []
    meant = set()
    for key in item:
        if key in CASE_KEYS or key in NOTE_KEYS:
            continue
        guess = nearest(key, CASE_KEYS)
        if guess is not None:  # refrence_text would silently lose BARTScore, promt the prompt
            errors.append(f'{where(key)}: unknown field "{key}"; did you mean "{guess}"?')
            meant.add(guess)
        elif warn:
            warn("case_unknown_field", where=where(key), field=key, known=", ".join(CASE_KEYS), effect="ignored")
    prompt = item.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        if not ("prompt" in meant and "prompt" not in item):
            errors.append(f'{where("prompt")}: field "prompt" must be a non-empty string')
        prompt = ""
    task_type = item.get("task_type", item.get("task"))
    # the four known tasks (and the seed's spellings) get their quality checks; any other task
    # type runs too and gets text statistics (docs/quality.md)
    task = canonical_task(task_type) if isinstance(task_type, str) else ""
    if not re.fullmatch(TASK_NAME_RULE, task) and not ("task_type" in meant and task_type is None):
        errors.append(f'{where("task_type")}: field "task_type" = {task_type!r}: give a name of letters (any script, '
                      f'e.g. 翻译), digits, "_", "-" or "." without spaces or "/" '
                      f'({", ".join(sorted(set(TASK_ALIASES.values())))} get quality checks; any other name gets '
                      "text statistics)")
    case: dict[str, Any] = {"task": task, "task_type": task_type,
                            "prompt": prompt, "source": "test_cases.json", "index_in_file": i}
    sources: dict[str, str] = {}

    def collect(fn, *args):
        """fn(*args), its SettingsError kept with the others instead of raised."""
        try:
            return fn(*args)
        except SettingsError as exc:
            errors.append(str(exc))
            return None

    if "model" in item:
        models = collect(_model_spec, item["model"], where("model"))
        if models is not None:
            case["models"], sources["models"] = models, "test_cases.json"
    for key in ("max_tokens", "temperature", "top_p", "num_ctx", "seed"):
        if key in item and item[key] is not None:
            value = collect(check_value, key, item[key], f'{where(key)}: field "{key}"')
            if value is not None:
                case[key], sources[key] = value, "test_cases.json"
    ref = item.get("reference_text")
    if ref is not None:
        if not isinstance(ref, str):
            errors.append(f'{where("reference_text")}: field "reference_text" must be a string')
        else:
            case["reference_text"] = ref
    load = item.get("load")
    if load is not None and load not in LOADS:
        errors.append(f'{where("load")}: field "load" = {load!r}; use one of {", ".join(LOADS)}')
        load = None
    case["load"] = load or _guess_load(prompt)
    sources["load"] = "test_cases.json" if load else "derived"
    lang = item.get("lang")
    if lang is not None and lang not in LANGS:
        errors.append(f'{where("lang")}: field "lang" = {lang!r}; use one of {", ".join(LANGS)}')
        lang = None
    case["lang"] = lang or _guess_lang(prompt)
    options = item.get("options")
    if options is not None:
        if not isinstance(options, dict):
            errors.append(f'{where("options")}: field "options" must be an object of server options')
        else:
            case["options"] = options
    expect = item.get("expect")
    if expect is not None:
        if not isinstance(expect, dict):
            errors.append(f'{where("expect")}: field "expect" must be an object (symbols, complexity, entry, tests)')
        else:
            symbols = expect.get("symbols") if isinstance(expect.get("symbols"), list) else []
            # refused now: a symbol no answer can have would cost every answer the mark
            errors += [f'{where("expect")}: field "expect": {p}' for p in map(symbol_spec_problem, symbols) if p]
            case["expect"] = expect
    if "think" in item:
        think = collect(check_value, "think", item["think"], f'{where("think")}: field "think"')
        if think is not None:
            case["think"] = think
    case["sources"] = sources
    return case, errors


def _suite_entry(item: dict[str, Any], path: Path, where: str) -> list[dict[str, Any]]:
    """A {"suite": "gsm8k=FILE", "limit": N, "sample": N, "sample_seed": S, "stop": [..]} entry: the suite's
    items as cases (a relative FILE is read next to test_cases.json; "stop" replaces the suite's own
    stop sequences, [] sends none)."""
    from collector.suites import SuiteError, build_cases, check_stop, parse_spec

    spec_text = item.get("suite")
    if not isinstance(spec_text, str):
        raise SettingsError(f'{where}: field "suite" must be a string such as "humaneval" or "gsm8k=test.jsonl"')
    kind, eq, file = spec_text.partition("=")
    if eq and not Path(file).is_absolute():
        spec_text = f"{kind}={path.parent / file}"
    opts = {}
    for key in ("limit", "sample", "sample_seed", "shots"):
        v = item.get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 0):
            raise SettingsError(f'{where}: field "{key}" must be a whole number ≥ 0, got {v!r}')
        opts[key] = v
    shots_file = item.get("shots_file")
    try:
        cases, _record = build_cases([parse_spec(spec_text)], opts["limit"], opts["sample"], opts["sample_seed"] or 0,
                                     opts["shots"] or 0,
                                     (path.parent / shots_file) if isinstance(shots_file, str) else None,
                                     check_stop(item.get("stop"), where))
    except SuiteError as exc:
        raise SettingsError(f"{where}: {exc}") from exc
    for case in cases:
        case["source"] = f"test_cases.json suite {case['suite']}"
        if "model" in item:
            case["models"] = _model_spec(item["model"], where)
    return cases


def case_hash(case: dict[str, Any]) -> str:
    """Short stable hash of what makes a case: task, load, lang, prompt."""
    key = json.dumps([case.get("task"), case.get("load"), case.get("lang"), case.get("prompt")], ensure_ascii=False)
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:12]
