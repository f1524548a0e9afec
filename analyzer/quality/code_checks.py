"""Static checks on a code answer (pure): find the code, parse it, look for symbols and a complexity.

Nothing here runs generated code; ``sandbox.py`` does that, in another process.
"""
from __future__ import annotations

import ast
import io
import re
import tokenize
from dataclasses import dataclass, field

from shared.tasks import PY_KEYWORDS, symbol_spec_problem

# ```python / ```py / ```python3 / ``` (no language) … ```. The closing fence may sit at the end of a
# code line or have prose after it (models do both); a fence left open (answer cut by max_tokens)
# runs to the end of the text.
_FENCE_RE = re.compile(r"(?m)^[ \t]*(`{3,}|~{3,})[ \t]*([\w+#.-]*)[^\n]*\n(.*?)(?:\1|\Z)", re.S)
_PY_LANGS = {"", "python", "py", "python3", "py3", "pycon", "ipython"}
_BIG_O_RE = re.compile(r"[OoΘθΩ]\s*[(（][^()（）]{0,30}(?:[(（][^()（）]{0,10}[)）][^()（）]{0,10})?[)）]")

# Phrases that state a complexity in words, keyed by the normalised big-O form they mean.
_COMPLEXITY_WORDS = {
    "o(logn)": ("logarithmic", "对数时间", "对数复杂度", "对数级"),
    "o(n)": ("linear time", "线性时间", "线性复杂度"),
    "o(1)": ("constant time", "常数时间", "常数复杂度"),
    "o(nlogn)": ("linearithmic", "线性对数"),
    "o(n^2)": ("quadratic", "平方时间", "平方复杂度"),
}

# Used only when a code case carries no `expect` and its prompt asks for a binary search (the seed's
# code task): the symbols a binary search nearly always names, alternatives separated by '|'.
BINARY_SEARCH_EXPECT = {"symbols": ["mid", "low|left|lo|l|start|begin", "high|right|hi|r|end"], "complexity": "O(log n)"}
_DEF_SPEC_RE = re.compile(r"(?:async\s+)?(def|class)\s+([A-Za-z_]\w*)")
_BINARY_SEARCH_PROMPT_RE = re.compile(r"binary[\s_-]*search|二分", re.I)


@dataclass
class CodeExpect:
    """What a code case expects; every part optional. ``symbols`` entries may list alternatives: "low|left"."""
    symbols: list[str] = field(default_factory=list)
    complexity: str | None = None
    entry: str | None = None
    tests: str | None = None


def resolve_expect(expect: dict | None, prompt: str | None) -> CodeExpect:
    """The case's expectations; the binary-search defaults when it has none and the prompt asks for one.

    Raises ValueError naming the field when ``expect`` has the wrong shape."""
    if expect is None:
        expect = BINARY_SEARCH_EXPECT if _BINARY_SEARCH_PROMPT_RE.search(prompt or "") else {}
    if not isinstance(expect, dict):
        raise ValueError(f"expect must be a mapping, got {type(expect).__name__}; fix the case's 'expect' field")
    symbols = expect.get("symbols") or []
    if isinstance(symbols, str):  # "mid, lo|low, def f" or "mid lo|low": 'def NAME' stays one entry
        symbols = [w for part in symbols.split(",") for w in
                   ([part.strip()] if _DEF_SPEC_RE.fullmatch(part.strip()) else part.split()) if w]
    if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
        raise ValueError("expect.symbols must be a list of strings such as ['mid', 'low|left']")
    for spec in symbols:
        problem = symbol_spec_problem(spec)
        if problem:
            raise ValueError(problem)
    for key in ("complexity", "entry", "tests"):
        if expect.get(key) is not None and not isinstance(expect[key], str):
            raise ValueError(f"expect.{key} must be a string, got {type(expect[key]).__name__}")
    return CodeExpect(symbols=list(symbols), complexity=expect.get("complexity") or None,
                      entry=expect.get("entry") or None, tests=expect.get("tests") or None)


def parses(code: str) -> bool:
    """True when ``code`` is valid Python syntax (ast only; nothing is executed)."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError):  # ValueError: null bytes in source
        return False
    return True


def _defines(code: str, name: str) -> bool:
    return re.search(rf"^\s*(?:async\s+)?def\s+{re.escape(name)}\s*\(|^\s*class\s+{re.escape(name)}\b", code, re.M) is not None


def extract_code(text: str, entry: str | None = None) -> str | None:
    """The Python code in an answer, or None.

    Fenced blocks in Python (or with no language) come first: the one defining ``entry`` when given,
    else the longest that parses, else the longest. Without fences, the whole text when it parses and
    looks like code (has a def/class/import/assignment)."""
    blocks = [m.group(3) for m in _FENCE_RE.finditer(text or "") if m.group(2).lower() in _PY_LANGS]
    blocks = [b.strip("\n").rstrip() for b in blocks if b.strip()]
    if blocks:
        if entry:
            defining = [b for b in blocks if _defines(b, entry)]
            if defining:
                blocks = defining
        parsing = [b for b in blocks if parses(b)]
        return max(parsing or blocks, key=len)
    stripped = (text or "").strip()
    if stripped and parses(stripped):
        tree = ast.parse(stripped)
        if any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom,
                                 ast.Assign, ast.For, ast.While, ast.If)) for node in tree.body):
            return stripped
    return None


def _identifiers(code: str) -> set[str]:
    """Every name in the code: from the AST when it parses (so words in strings and comments do not
    count), else every identifier-looking word."""
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError):
        return set(re.findall(r"[A-Za-z_]\w*", code))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            names.add(node.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
        elif isinstance(node, ast.Attribute):
            names.add(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
    return names


def _keywords(code: str) -> set[str]:
    """The Python keywords the code uses (tokens, so keywords in strings and comments do not count)."""
    found: set[str] = set()
    try:
        for tok in tokenize.generate_tokens(io.StringIO(code).readline):
            if tok.type == tokenize.NAME and tok.string in PY_KEYWORDS:
                found.add(tok.string)
    except (tokenize.TokenError, IndentationError, SyntaxError):
        found |= {w for w in re.findall(r"[A-Za-z_]\w*", code) if w in PY_KEYWORDS}
    return found


def _has(alt: str, code: str, names: set[str], keywords: set[str]) -> bool:
    m = _DEF_SPEC_RE.fullmatch(alt)
    if m:  # 'def NAME' / 'class NAME': the code defines it
        return _defines(code, m.group(2))
    if alt in PY_KEYWORDS:
        return alt in keywords
    return alt in names


def missing_symbols(code: str, symbols: list[str]) -> list[str]:
    """The expected symbols that the code never has, in order. Each entry lists alternatives separated
    by '|'; an alternative is a name ('mid'), a Python keyword ('while') or 'def NAME' / 'class NAME'."""
    names, keywords = _identifiers(code), _keywords(code)
    return [spec for spec in symbols
            if not any(_has(alt.strip(), code, names, keywords) for alt in spec.split("|") if alt.strip())]


def normalise_complexity(expr: str) -> str:
    """Canonical big-O text: 'O(log(n))', 'O( log n )', 'O（logN）', 'O(log_2 n)' → 'o(logn)'."""
    s = expr.lower().translate(str.maketrans("（）·×", "()**"))
    s = re.sub(r"\s+", "", s)
    s = re.sub(r"\blog_?2|\blg|\bln", "log", s)
    s = re.sub(r"log\((\w+)\)", r"log\1", s)  # log(n) → logn
    s = s.replace("**", "^").replace("*", "")
    return s


def mentions_complexity(text: str, expected: str | None) -> bool:
    """True when the answer (prose or code comments) states ``expected`` (any spelling, any language
    around it), or, with no expectation, when it states any big-O complexity at all."""
    found = {normalise_complexity(m.group(0)) for m in _BIG_O_RE.finditer(text or "")}
    if expected is None:
        return bool(found)
    want = normalise_complexity(expected)
    if want in found:
        return True
    lowered = (text or "").lower()
    return any(word in lowered for word in _COMPLEXITY_WORDS.get(want, ()))
