"""Reading the files people write by hand (test_cases.json, config.py): encodings, JSON slips, typos (pure).

Windows Notepad on a Chinese system saves "ANSI", which is GBK (code page 936), and "Unicode", which
is UTF-16. A file that is not UTF-8 but decodes cleanly as GBK is read as GBK (the caller logs a
warning and records the encoding in config.json); UTF-16 with its byte-order mark is read as such;
anything else is refused with the line of the first bad byte and how to save as UTF-8.
"""
from __future__ import annotations

import difflib
from pathlib import Path

SAVE_AS_UTF8 = ('save it as UTF-8 (Notepad: File > Save As > Encoding "UTF-8"; VS Code: "Save with Encoding" '
                '> UTF-8)')
# Full-width punctuation a Chinese input method types where JSON wants the ASCII one.
FULL_WIDTH = {"“": '"', "”": '"', "，": ",", "：": ":", "［": "[", "］": "]", "｛": "{", "｝": "}"}


class FileTextError(ValueError):
    """The bytes of a file are not text we can read; the message names the file, line and fix."""


def read_text(path: Path) -> tuple[str, str]:
    """(text, encoding): UTF-8 (a BOM is fine), UTF-16 with a BOM, else GBK when it decodes cleanly."""
    data = path.read_bytes()
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return data.decode("utf-16"), "utf-16"
        except UnicodeDecodeError as exc:
            raise FileTextError(f"{path}: starts like UTF-16 but does not decode ({exc.reason}); {SAVE_AS_UTF8}")
    try:
        return data.decode("utf-8-sig"), "utf-8"
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        try:
            return data.decode("gbk"), "gbk"
        except UnicodeDecodeError:
            raise FileTextError(f"{path}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x}) and not GBK either; "
                                f"{SAVE_AS_UTF8}") from None


def line_of(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def json_slips(text: str) -> list[tuple[int, str]]:
    """(line, what and fix) for what people carry over from JavaScript or a Chinese keyboard:
    ``//`` and ``/* */`` comments, a comma before ``]`` or ``}``, full-width quotes and commas.
    Only text outside JSON strings is looked at."""
    out: list[tuple[int, str]] = []
    i, n = 0, len(text)
    comma: int | None = None     # offset of a comma not yet followed by a value
    while i < n:
        ch = text[i]
        if ch == '"':
            comma = None
            i += 1
            while i < n and text[i] != '"' and text[i] != "\n":
                i += 2 if text[i] == "\\" else 1
            i += 1
            continue
        if text.startswith("//", i):
            out.append((line_of(text, i), "JSON allows no comments: delete the // comment (or move the note "
                                          "into a field such as \"note\")"))
            j = text.find("\n", i)
            i = n if j < 0 else j
            continue
        if text.startswith("/*", i):
            out.append((line_of(text, i), "JSON allows no comments: delete the /* */ comment"))
            j = text.find("*/", i + 2)
            i = n if j < 0 else j + 2
            continue
        if ch in FULL_WIDTH:
            out.append((line_of(text, i), f"full-width {ch!r} (Chinese input method) outside a string: JSON needs "
                                          f"the ASCII {FULL_WIDTH[ch]!r}"))
        elif ch == ",":
            comma = i
        elif ch in "]}":
            if comma is not None:
                out.append((line_of(text, comma), f"trailing comma before {ch!r}: JSON allows none after the last "
                                                  "item; delete that comma"))
            comma = None
        elif not ch.isspace():
            comma = None
        i += 1
    return out


def nearest(name: str, known, cutoff: float = 0.6) -> str | None:
    """The known name a typo most likely meant (``promt`` -> ``prompt``), or None."""
    lowered = {k.lower(): k for k in known}
    hit = difflib.get_close_matches(name.lower(), list(lowered), n=1, cutoff=cutoff)
    return lowered[hit[0]] if hit else None
