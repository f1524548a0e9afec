"""Pre-download a BARTScore checkpoint so the analysis can run offline.

    python -m analyzer.quality.fetch_checkpoint facebook/bart-large-cnn --out models/facebook--bart-large-cnn
    python -m analyzer.quality.fetch_checkpoint fnlp/bart-base-chinese          # into the Hugging Face cache

Then point BARTSCORE_CHECKPOINT (BARTSCORE_CHECKPOINT_ZH for the Chinese model) at the --out
directory, or, without --out, just run offline: the cache is read first. Needs network.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from shared.logs import configure_logging, get_logger

log = get_logger("quality.fetch_checkpoint")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analyzer.quality.fetch_checkpoint", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="hub id, e.g. facebook/bart-large-cnn or fnlp/bart-base-chinese")
    ap.add_argument("--out", type=Path, help="also save model + tokenizer to this directory (save_pretrained)")
    ap.add_argument("--log-level", default="info")
    args = ap.parse_args(argv)
    configure_logging(args.log_level)
    from analyzer.quality.bartscore import BartScoreUnavailable, load_checkpoint

    try:
        tokenizer, model = load_checkpoint(args.checkpoint)
    except BartScoreUnavailable as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        model.save_pretrained(args.out)
        tokenizer.save_pretrained(args.out)
        log.info("checkpoint_saved", checkpoint=args.checkpoint, out=str(args.out),
                 hint=f"set BARTSCORE_CHECKPOINT={args.out}")
    else:
        log.info("checkpoint_cached", checkpoint=args.checkpoint)
    return 0


if __name__ == "__main__":
    sys.exit(main())
