"""Answer extraction for benchmark suites, as the benchmarks score them (pure; never raises on text).

- HumanEval: the code block if there is one (the one defining the entry point first), else the whole
  text; a full function (``def entry(...)``) or a body-only completion both become a program of the
  problem's prompt + the answer, run against the problem's ``check()`` in the sandbox.
- GSM8K: exact match of the number, two rules as the standard harness: ``strict`` (``#### N``, "The
  answer is N", "答案是 N") and ``flexible`` (the last number in the text); commas, ``$``, units and a
  trailing period are stripped and numbers compared by value (18 == 18.00).
- Multiple choice: the chosen letter from English and Chinese answers ("The answer is B", "答案：C",
  "选 D", "(B)", a bare letter); an answer with no recognisable letter is None (scored wrong, counted).
"""
from __future__ import annotations

import re
import unicodedata
from decimal import Decimal, InvalidOperation

from analyzer.quality import code_checks

_FENCE_RE = re.compile(r"(?m)^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:\1|\Z)", re.S)


# ---------------------------------------------------------------- HumanEval

def _fenced(text: str) -> list[str]:
    return [m.group(3).strip("\n") for m in _FENCE_RE.finditer(text)
            if m.group(2).lower() in ("", "python", "py", "python3", "py3") and m.group(3).strip()]


def _dedent_body(code: str) -> str:
    """A body-only completion must sit inside the prompt's function: indent it when the model did not."""
    lines = code.split("\n")
    start = next((i for i, ln in enumerate(lines) if ln.strip()), 0)
    if lines[start][:1] in (" ", "\t"):
        return code
    rest = [len(ln) - len(ln.lstrip(" ")) for ln in lines[start + 1:] if ln.strip()]
    if rest and min(rest) >= 4:  # only the first line lost its indent (the answer text was stripped)
        return "\n".join(lines[:start] + ["    " + lines[start]] + lines[start + 1:])
    return "\n".join(("    " + ln) if ln.strip() else ln for ln in lines)


def humaneval_code(answer: str | None, entry_point: str) -> str:
    """The code of an answer: the fenced block defining ``entry_point`` (else the longest block), or
    the whole text when there is no block."""
    text = answer or ""
    blocks = _fenced(text)
    if blocks:
        defining = [b for b in blocks if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", b, re.M)]
        return max(defining or blocks, key=len)
    return text.strip("\n")


def humaneval_program(prompt: str, answer: str | None, entry_point: str) -> tuple[str, str]:
    """(program, how): the problem's prompt followed by the answer's code. ``how`` is ``function``
    when the answer defines ``entry_point`` itself (it then replaces the prompt's stub), ``body`` when
    it is a completion of the prompt's function body."""
    code = humaneval_code(answer, entry_point)
    if re.search(rf"^\s*def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        # the prompt first: its imports and helper functions stay defined; the answer's def wins
        return prompt.rstrip("\n") + "\n    pass\n\n\n" + code + "\n", "function"
    return prompt + _dedent_body(code) + "\n", "body"


def humaneval_tests(test: str, entry_point: str) -> str:
    """The problem's tests as HumanEval runs them: its ``check`` called on the entry point."""
    return f"{test}\n\ncheck({entry_point})\n"


def parses(program: str) -> bool:
    return code_checks.parses(program)


# ---------------------------------------------------------------- GSM8K

_NUM = r"-?\$?\s?\d[\d,]*(?:\.\d+)?|-?\$?\s?\.\d+"
_STRICT_RES = (
    re.compile(rf"####\s*({_NUM})"),
    re.compile(rf"(?i)the\s+(?:final\s+)?answer\s+is\s*[:：]?\s*({_NUM})"),
    re.compile(rf"(?:最终)?答案\s*(?:是|为|[:：])\s*({_NUM})"),
)
_ANY_NUM = re.compile(_NUM)


def normalise_number(text: str | None) -> str | None:
    """'1,234.00' / '$18' / '18.' → '1234' / '18' / '18' (by value: Decimal, normalised); None if none."""
    if text is None:
        return None
    s = unicodedata.normalize("NFKC", str(text)).strip().replace(",", "").replace("$", "").replace(" ", "")
    s = s.rstrip(".")
    m = re.fullmatch(r"-?\d*\.?\d+", s)
    if not m:
        return None
    try:
        value = Decimal(s)
    except InvalidOperation:
        return None
    if value == value.to_integral_value():
        return str(int(value))
    return format(value.normalize(), "f")


def gsm8k_target(answer_field: str) -> str | None:
    """The reference number of a GSM8K answer: what follows its '#### '."""
    m = re.search(r"####\s*(.+?)\s*$", answer_field or "", re.S)
    return normalise_number(m.group(1)) if m else None


def gsm8k_strict(text: str | None) -> str | None:
    """The number the answer marks as final (#### N, "The answer is N", "答案是 N"); the last marked one."""
    s = unicodedata.normalize("NFKC", text or "")
    found = [(m.start(), m.group(1)) for rx in _STRICT_RES for m in rx.finditer(s)]
    return normalise_number(max(found)[1]) if found else None


def gsm8k_flexible(text: str | None) -> str | None:
    """The last number anywhere in the answer."""
    nums = _ANY_NUM.findall(unicodedata.normalize("NFKC", text or ""))
    for raw in reversed(nums):
        n = normalise_number(raw)
        if n is not None:
            return n
    return None


# ---------------------------------------------------------------- multiple choice

LETTERS = "ABCDEFGHIJ"


def _letters(n_options: int) -> str:
    return LETTERS[:max(1, min(n_options, len(LETTERS)))]


def extract_choice(text: str | None, n_options: int = 4) -> str | None:
    """The chosen option's letter, or None when the answer names none (or names several without
    saying which is the answer)."""
    s = unicodedata.normalize("NFKC", text or "").strip()  # full-width Ｂ → B
    if not s:
        return None
    valid = _letters(n_options)
    cls = f"[{valid}{valid.lower()}]"
    patterns = (
        rf"(?i)answer\s*(?:is|:)?\s*(?:option\s*)?[(\[]?({cls})[)\].,]?(?![A-Za-z])",
        rf"答案\s*(?:是|为|应该是|应为|选)?\s*[:：]?\s*(?:选项)?\s*[(\[（]?({cls})(?![A-Za-z])",
        rf"(?:故|所以|因此)?(?:应)?选(?:择)?\s*(?:项)?\s*[:：]?\s*[(\[（]?({cls})(?![A-Za-z])",
        rf"(?i)(?:option|choice)\s*[(\[]?({cls})[)\]]?\s+is\s+(?:correct|right)",
    )
    for pattern in patterns:
        found = re.findall(pattern, s)
        if found:
            return found[-1].upper()
    bare = re.fullmatch(rf"[(\[（]?([{valid}])[)\]）]?[.:：)。]?(?:\s.*)?", s, re.S)
    if bare and (len(s) <= 3 or re.match(rf"[(\[（]?[{valid}][)\]）.:：。]", s)):
        return bare.group(1)
    alone = set(re.findall(rf"(?<![A-Za-z])([{valid}])(?![A-Za-z])", s))
    if len(alone) == 1:
        return alone.pop()
    return None


def choice_letter(answer: object, n_options: int) -> str | None:
    """A suite file's answer (letter 'B', index 1 or '1') as a letter; None when it is neither."""
    valid = _letters(n_options)
    if isinstance(answer, bool):
        return None
    if isinstance(answer, int):
        return valid[answer] if 0 <= answer < len(valid) else None
    s = unicodedata.normalize("NFKC", str(answer)).strip().upper()
    if len(s) == 1 and s in valid:
        return s
    if s.isdigit() and int(s) < len(valid):
        return valid[int(s)]
    return None
