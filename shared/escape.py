"""Escaping for text that came from a model or a server (answers, thinking, prompts, model names, error
texts) before it lands in a report, a plot or a terminal. Pure, stdlib only; one function per sink:

- ``md_inline``: a Markdown table cell or list item that renders as the same text and nothing else
  (no HTML, no links, no images, no emphasis, one line).
- ``html_text`` / ``html_attr``: an HTML text node / a quoted attribute value.
- ``html_url``: an href/src value, or ``"#"`` when it is not http(s) or a relative path.
- ``terminal_text``: a line for a terminal or a log: control characters (ANSI escape sequences
  included) and bidirectional overrides shown as visible ``\\x1b``-style escapes, never interpreted.
- ``mpl_text``: a matplotlib label (``$`` would start mathtext).
- ``safe_filename``: a file name part that stays inside its directory.
- ``json_line``: one JSON line for a terminal: still valid JSON with the same values, but every
  control and bidi character written as a ``\\uXXXX`` escape (json.dumps leaves C1 and bidi raw).
"""
from __future__ import annotations

import hashlib
import html
import json
import re
import unicodedata
from typing import Any
from urllib.parse import urlsplit

# C0 and C1 controls (ESC starts ANSI sequences), DEL, and the Unicode bidi / invisible format
# characters that can make text display differently from what it is ("Trojan source").
_CONTROL_RE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u2069\ufeff]")
# Inline Markdown punctuation (emphasis, code, links, images, tables, strikethrough, math, attributes);
# & < > become entities instead. Block markers matter only at the start: _MD_START_RE.
_MD_SPECIAL_RE = re.compile(r"([\\`*_{}\[\]!|~$])")
_MD_START_RE = re.compile(r"^(\s*)([#+=-]|\d+(?=[.)]))")  # ">" is an entity already
_WS_RE = re.compile(r"[\t\n\r]+")


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _visible(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def terminal_text(value: Any, keep_newlines: bool = False) -> str:
    """Text safe to print: every control character (ANSI escapes, \\r, backspace, bell) and bidi
    override becomes its visible escape; newlines too unless ``keep_newlines``."""
    text = _text(value)
    if keep_newlines:
        return "\n".join(_CONTROL_RE.sub(lambda m: _visible(m.group(0)), line) for line in text.split("\n"))
    return _CONTROL_RE.sub(lambda m: _visible(m.group(0)), text.replace("\n", "\\n").replace("\t", "\\t"))


def md_inline(value: Any) -> str:
    """One line of Markdown that renders exactly as ``value``'s text: inline Markdown punctuation and a
    block marker at the start are backslash-escaped, then ``& < >`` become entities (so no tag, link,
    image, autolink, emphasis, code span, heading or table cell break can form); line breaks become
    spaces, controls visible escapes."""
    text = _CONTROL_RE.sub(lambda m: _visible(m.group(0)), _WS_RE.sub(" ", _text(value)))
    text = _MD_SPECIAL_RE.sub(r"\\\1", text)
    # a heading, list or setext marker at the start: escape it (for "12." the "." after the digits)
    text = _MD_START_RE.sub(lambda m: m.group(1) + (m.group(2) + "\\" if m.group(2)[0].isdigit()
                                                     else "\\" + m.group(2)), text, count=1)
    return html.escape(text, quote=False)


def html_text(value: Any) -> str:
    """An HTML text node: ``& < > " '`` as entities, controls as visible escapes (newlines kept)."""
    return html.escape(terminal_text(value, keep_newlines=True), quote=True)


def html_attr(value: Any) -> str:
    """A double-quoted HTML attribute value (quotes included as entities, newlines as escapes)."""
    return html.escape(terminal_text(value), quote=True)


def html_url(value: Any) -> str:
    """An href/src value: http(s) URLs and relative paths, escaped for the attribute; anything else
    (``javascript:``, ``data:``, ``vbscript:``, …, also when hidden by whitespace or case) is ``#``."""
    raw = _text(value)
    probe = re.sub(r"[\x00-\x20\x7f]+", "", raw)  # browsers ignore these inside a scheme: "java\tscript:"
    scheme = urlsplit(probe).scheme.lower()
    if scheme not in ("", "http", "https") or (not scheme and ":" in probe.split("/")[0]):
        return "#"
    return html.escape(raw.strip(), quote=True)


def json_line(obj: Any, **kw: Any) -> str:
    """``json.dumps(obj, ensure_ascii=False)`` (UTF-8 text stays readable) with controls escaped."""
    text = json.dumps(obj, ensure_ascii=False, **kw)
    # outside strings json.dumps writes only ASCII punctuation, so every match is inside a string
    return _CONTROL_RE.sub(lambda m: f"\\u{ord(m.group(0)):04x}", text)


def mpl_text(value: Any) -> str:
    """A matplotlib label: ``$`` escaped (mathtext would parse or reject it), controls made visible."""
    return terminal_text(value).replace("$", r"\$")


def safe_filename(value: Any, max_len: int = 80) -> str:
    """A file name part from any text: letters and digits of any script, ``-`` ``_`` ``.`` kept, the rest
    ``_``; never empty, never ``.``/``..`` or hidden; a short hash keeps changed names apart."""
    text = unicodedata.normalize("NFC", _text(value))
    safe = "".join(ch if (ch.isalnum() or ch in "-_.") else "_" for ch in text).strip(".") or "_"
    if safe != text or len(safe) > max_len:
        digest = hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe[:max_len]}_{digest}"
    return safe
