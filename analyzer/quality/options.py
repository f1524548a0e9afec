"""Options of the quality step (the analyzer passes them through from its CLI)."""
from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_CHECKPOINT = "facebook/bart-large-cnn"
DEFAULT_CHECKPOINT_ZH = "fnlp/bart-base-chinese"


@dataclass
class QualityOptions:
    bart_checkpoint: str | None = None  # default "facebook/bart-large-cnn" (env BARTSCORE_CHECKPOINT overrides the default)
    bart_checkpoint_zh: str | None = None  # for lang == "zh" references (default "fnlp/bart-base-chinese", env BARTSCORE_CHECKPOINT_ZH)
    device: str | None = None  # None = cuda when available else cpu
    batch_size: int = 8
    max_length: int = 1024
    enable_bart: bool = True  # False = skip BARTScore (columns present, empty)
    run_code_tests: bool = True
    code_timeout_s: float = 10.0
    # Where no sandbox (bubblewrap) is available, code tests are skipped unless this is True: then
    # model-written code runs as the user, with only rlimits and a timeout (docs/quality.md).
    unsafe_code_tests_without_sandbox: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"QualityOptions.batch_size must be at least 1, got {self.batch_size}")
        if self.max_length < 2:
            raise ValueError(f"QualityOptions.max_length must be at least 2 tokens, got {self.max_length}")
        if not self.code_timeout_s > 0:
            raise ValueError(f"QualityOptions.code_timeout_s must be > 0 seconds, got {self.code_timeout_s}")

    def checkpoint_for(self, lang: str | None) -> str:
        """The BART checkpoint for a reference in ``lang``: option, else env, else the default."""
        if lang == "zh":
            return self.bart_checkpoint_zh or os.environ.get("BARTSCORE_CHECKPOINT_ZH") or DEFAULT_CHECKPOINT_ZH
        return self.bart_checkpoint or os.environ.get("BARTSCORE_CHECKPOINT") or DEFAULT_CHECKPOINT
