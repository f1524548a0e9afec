"""Print the message contract as Markdown, generated from shared/messages.py (the only place a
key is defined). docs/contract.md is this output; a test keeps the two equal.

    python -m shared.contract > docs/contract.md
"""
from __future__ import annotations

import dataclasses
import sys
import typing

from shared import messages as M


def _type(hint: typing.Any) -> str:
    text = str(hint).replace("typing.", "").replace("shared.messages.", "")
    text = text.replace(" | None", "").replace("<class '", "").replace("'>", "")
    return "number" if text == "float" else text  # an int is accepted wherever a float is


def _table(cls: type[M.Record]) -> list[str]:
    hints = typing.get_type_hints(cls)
    lines = ["| key | type | required | meaning |", "|---|---|---|---|"]
    for f in dataclasses.fields(cls):
        if f.name in M.ENVELOPE_KEYS and cls is not M.Body:
            continue
        req = "yes" if f.metadata.get("required") or f.name in M.ENVELOPE_KEYS else ""
        doc = f.metadata.get("doc", "").replace("|", "\\|")  # a pipe would end the table cell
        lines.append(f"| `{f.name}` | {_type(hints[f.name])} | {req} | {doc} |")
    return lines


def markdown() -> str:
    out = ["# Message contract, schema v%d" % M.SCHEMA_VERSION, "",
           "Generated from `shared/messages.py` by `python -m shared.contract`; do not edit by hand.",
           "A bus message is `[topic, payload]`; the payload is one flat msgpack map: the envelope, then the",
           "topic's keys. Units are in the key names. Absent means not available, never a fake zero.",
           f"Readers accept schema versions {', '.join(map(str, M.READABLE_VERSIONS))}; a payload over "
           f"{M.MAX_PAYLOAD_BYTES // (1024 * 1024)} MiB is dropped unread.",
           "An `int` is a signed 64-bit integer: a payload with a wrong type or an integer beyond that range",
           "is refused whole.", "",
           "## Envelope (every topic)", ""]
    out += _table(M.Body)
    for topic, cls in M.BODIES.items():
        out += ["", f"## `{topic}`", "", (cls.__doc__ or "").strip().replace("\n    ", " "), ""]
        out += _table(cls)
    out += ["", "## `client` map of `req.end`", "", (M.ClientMetrics.__doc__ or "").strip().replace("\n    ", " "), ""]
    out += _table(M.ClientMetrics)
    if M.ClientMetrics.ALIASES:
        out += ["", "Older names still read: " + ", ".join(f"`{a}` → `{b}`" for a, b in M.ClientMetrics.ALIASES.items())
                + "."]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    sys.stdout.reconfigure(encoding="utf-8")  # type: ignore[attr-defined]
    sys.stdout.write(markdown())
