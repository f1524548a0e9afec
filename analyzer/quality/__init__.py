"""Quality of generated answers: BARTScore, code checks (static and tests in a sandbox), text diversity.

Importing this package is light: torch and transformers are imported only when BARTScore runs.

    from analyzer.quality import assess, QualityOptions
    rows = assess(requests, QualityOptions(device="cpu"))   # {rid: {column: value}}

See docs/quality.md for every column's definition.
"""
from __future__ import annotations

from analyzer.quality.assess import COLUMNS, assess
from analyzer.quality.options import DEFAULT_CHECKPOINT, DEFAULT_CHECKPOINT_ZH, QualityOptions

__all__ = ["COLUMNS", "DEFAULT_CHECKPOINT", "DEFAULT_CHECKPOINT_ZH", "QualityOptions", "assess"]
