"""Score answers from a JSON-lines file (one request dict a line) and write one result a line.

    python -m analyzer.quality --requests requests.jsonl --out quality.jsonl
    python -m analyzer.quality --requests requests.jsonl --no-bart --no-code-tests

A request line: {"rid", "task" (qa|summary|code|creative), "text", "thinking", "reference", "lang",
"expect", "prompt"}; an output line: {"rid": ..., column: value, ...} (docs/quality.md).
The analyzer calls analyzer.quality.assess() directly; this entry point is for checking by hand.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from analyzer.quality.assess import assess
from analyzer.quality.options import QualityOptions
from analyzer.quality.sandbox import UNSAFE_FLAG
from shared.escape import json_line
from shared.logs import configure_logging


def read_requests(path: Path) -> list[dict]:
    """Request dicts from a JSON-lines file; ValueError naming the file and line on bad JSON."""
    requests = []
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                requests.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc.msg}); each line must be one request object") from exc
    return requests


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analyzer.quality", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=Path, required=True, help="JSON-lines file of request dicts")
    ap.add_argument("--out", type=Path, help="JSON-lines output (default: stdout)")
    ap.add_argument("--bart-checkpoint", help="hub id or directory (default facebook/bart-large-cnn, env BARTSCORE_CHECKPOINT)")
    ap.add_argument("--bart-checkpoint-zh", help="for Chinese references (default fnlp/bart-base-chinese, env BARTSCORE_CHECKPOINT_ZH)")
    ap.add_argument("--device", help="cpu, cuda, cuda:1 … (default: cuda when available)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-length", type=int, default=1024, help="BART truncation in tokens")
    ap.add_argument("--no-bart", action="store_true", help="skip BARTScore (columns stay empty)")
    ap.add_argument("--no-code-tests", action="store_true", help="static code checks only")
    ap.add_argument("--code-timeout-s", type=float, default=10.0)
    ap.add_argument(UNSAFE_FLAG, dest="unsafe_code_tests", action="store_true",
                    help="where no sandbox (bubblewrap) is available, run model-written code as your user anyway "
                         "(UNSAFE: it can read your files and use the network)")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    configure_logging(args.log_level)
    try:
        opts = QualityOptions(bart_checkpoint=args.bart_checkpoint, bart_checkpoint_zh=args.bart_checkpoint_zh,
                              device=args.device, batch_size=args.batch_size, max_length=args.max_length,
                              enable_bart=not args.no_bart, run_code_tests=not args.no_code_tests,
                              code_timeout_s=args.code_timeout_s,
                              unsafe_code_tests_without_sandbox=args.unsafe_code_tests)
        requests = read_requests(args.requests)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    results = assess(requests, opts, progress=sys.stderr.isatty())
    # control and bidi characters as \\u escapes: the same values, and nothing a terminal would act on
    lines = "".join(json_line({"rid": rid, **row}) + "\n" for rid, row in results.items())
    if args.out:
        args.out.write_text(lines, encoding="utf-8")
    else:
        sys.stdout.write(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
