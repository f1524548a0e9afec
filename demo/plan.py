"""What the demo runs, as argument lists (pure): the telemetry daemon, the CPU LLM server and the
collector. Kept apart from the process handling so that the choices are testable without processes."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEMO_MODEL = "smollm2-135m-instruct"  # the alias demo/llm_server.py serves the GGUF under
DEFAULT_TASKS = ("qa", "summary", "code", "creative")
# One load keeps the default demo (4 tasks x 2 languages x 2 runs) under 3 minutes on a busy 2-core host.
DEFAULT_LOADS = ("short",)
DEFAULT_LANGS = ("en", "zh")
SUITE_MAX_TOKENS = 384  # a HumanEval function with a short explanation fits; SmolLM2 rarely needs more


@dataclass
class DemoSettings:
    out: Path = Path("data")
    tasks: tuple[str, ...] = DEFAULT_TASKS
    loads: tuple[str, ...] = DEFAULT_LOADS
    langs: tuple[str, ...] = DEFAULT_LANGS
    runs: int = 2
    max_tokens: int = 80
    seed: int = 1234
    timeout_s: float = 300.0
    ollama: bool = False
    models: tuple[str, ...] = field(default_factory=tuple)
    verbose: bool = False
    quality: bool = True
    plots: bool = True
    report_lang: str = "both"  # en (report.html), zh (report.zh.html) or both
    serve: str | None = None   # HOST:PORT of the live page (collector --serve); None: no page
    suites: tuple[str, ...] = ()   # --suite values, passed to the collector as they are
    limit: int | None = None
    sample: int | None = None
    sample_seed: int = 0

    def validate(self) -> None:
        """Raise ValueError naming the flag and the fix."""
        if self.runs < 1:
            raise ValueError(f"--runs must be at least 1, got {self.runs}")
        if self.max_tokens < 1:
            raise ValueError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if self.timeout_s <= 0:
            raise ValueError(f"--timeout must be positive seconds, got {self.timeout_s:g}")
        if self.ollama and not self.models:
            raise ValueError("--ollama needs --models (names as `ollama list` shows them, e.g. --models gemma3:1b)")
        if not self.ollama and self.models and set(self.models) != {DEMO_MODEL}:
            raise ValueError(f"the built-in demo server serves only {DEMO_MODEL}; pass --ollama to use other models")

    @property
    def model_names(self) -> tuple[str, ...]:
        return self.models if self.ollama else (DEMO_MODEL,)

    @property
    def backend(self) -> str:
        return "ollama" if self.ollama else "openai"


def telemetry_args(endpoint: str, server_port: int | None = None) -> list[str]:
    """The daemon with a SIMULATED GPU (labelled so in every message) and real psutil/RAPL host data;
    it watches the LLM server listening on ``server_port`` (its own CPU time, cpu_energy_j_server)."""
    args = ["telemetry", "--gpu", "sim", "--endpoint", endpoint, "--gpu-hz", "100", "--host-hz", "10"]
    return args + (["--server-port", str(server_port)] if server_port else [])


def server_args(port: int, ctx: int, threads: int) -> list[str]:
    return ["demo.llm_server", "--port", str(port), "--ctx", str(ctx), "--threads", str(threads)]


def analyzer_flags(s: DemoSettings) -> list[str]:
    flags = [] if s.verbose else ["--log-level", "warning"]
    flags += ["--report-lang", s.report_lang]
    if not s.quality:
        flags.append("--no-quality")
    if not s.plots:
        flags.append("--no-plots")
    return flags


def collector_args(s: DemoSettings, batch_dir: Path, base_url: str, telemetry_endpoint: str,
                   events_endpoint: str) -> list[str]:
    """``python -m collector`` arguments for the demo batch (the collector runs the analyzer at the end)."""
    args = ["collector", "--exp-dir", str(batch_dir), "--backend", s.backend, "--base-url", base_url,
            "--models", *s.model_names, *(["--tasks", *s.tasks] if s.tasks else []), "--loads", *s.loads,
            "--langs", *s.langs, "--runs", str(s.runs), "--max-tokens", str(s.max_tokens), "--seed", str(s.seed),
            "--timeout", f"{s.timeout_s:g}", "--telemetry-endpoint", telemetry_endpoint,
            "--events-endpoint", events_endpoint, "--telemetry-wait", "30"]
    for suite in s.suites:
        args += ["--suite", suite]
    if s.suites and s.limit is not None:
        args += ["--limit", str(s.limit)]
    if s.suites and s.sample is not None:
        args += ["--sample", str(s.sample), "--sample-seed", str(s.sample_seed)]
    if s.ollama:
        # keep the model loaded between requests, and load it once before the timed ones
        args += ["--keepalive", "5m", "--warmup"]
    if not s.verbose:
        args += ["--log-level", "warning"]
    flags = analyzer_flags(s)
    if flags:
        args += ["--analyzer-args", " ".join(flags)]
    if s.serve:
        args += ["--serve", s.serve]  # the collector prints the page's URL
    return args
