"""How a batch ended (pure): the exit code and the closing line a person reads.

| code | meaning                                                                              |
|------|--------------------------------------------------------------------------------------|
| 0    | every planned request has a successful result (this start or an earlier one)         |
| 1    | bad settings or input files, or the batch directory cannot be used; nothing was sent |
| 2    | no telemetry heartbeat (start the daemon, or pass --no-telemetry)                    |
| 3    | the LLM server is unreachable or is not the server the flags say                     |
| 4    | some requests failed or were skipped (missing model); the rest are in the batch      |
| 5    | nothing succeeded: every planned request failed or was skipped                       |
| 130  | interrupted (Ctrl-C, SIGTERM); what finished is kept and analysed; resume it         |
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.batch import resume_command  # noqa: F401  (collector.outcome.resume_command stays importable)

EXIT_OK, EXIT_SETTINGS, EXIT_TELEMETRY, EXIT_CONNECTION = 0, 1, 2, 3
EXIT_INCOMPLETE, EXIT_NOTHING, EXIT_INTERRUPTED = 4, 5, 130
EXIT_CODES_HELP = __doc__.split("\n\n", 1)[1].strip()


@dataclass
class Tally:
    planned: int = 0           # requests in the whole matrix
    already_done: int = 0      # finished by an earlier start of this batch
    requests: int = 0          # sent by this start
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    interrupted: bool = False
    fatal: str | None = None   # the server went away
    late_starts: int = 0       # open loop: starts that missed their scheduled arrival (collector.arrivals)

    @property
    def ok_total(self) -> int:
        return self.already_done + self.ok

    @property
    def not_done(self) -> int:
        """Planned requests without a successful result."""
        return self.planned - self.ok_total


def exit_code(t: Tally) -> int:
    if t.interrupted:
        return EXIT_INTERRUPTED
    if t.fatal:
        return EXIT_CONNECTION
    if t.planned and t.ok_total >= t.planned:
        return EXIT_OK
    return EXIT_NOTHING if t.ok_total == 0 else EXIT_INCOMPLETE




def fallback_note(fallback: dict | None) -> str | None:
    """What --use-default-on-error replaced (config.json ``fallback``), for the closing line."""
    files = (fallback or {}).get("files") or {}
    if not files:
        return None
    parts = [f"{Path(f).name} was bad, ran {why.rsplit(' -> ', 1)[-1]} instead" for f, why in files.items()]
    return "FALLBACK (--use-default-on-error): " + "; ".join(parts) + " (see report Problems)"


def closing_line(t: Tally, batch_root: Path, fallback: dict | None = None) -> str:
    code = exit_code(t)
    verdict = {EXIT_OK: "complete", EXIT_INCOMPLETE: "INCOMPLETE", EXIT_NOTHING: "NOTHING SUCCEEDED",
               EXIT_INTERRUPTED: "INTERRUPTED", EXIT_CONNECTION: "STOPPED (server unreachable)"}[code]
    done = f" ({t.already_done} before this start)" if t.already_done else ""
    line = (f"batch {verdict}: planned {t.planned} / ok {t.ok_total}{done} / failed {t.failed} / "
            f"skipped {t.skipped} / not run {max(0, t.not_done - t.failed - t.skipped)} -> {batch_root} (exit {code})")
    if t.late_starts:
        line += (f"\n  {t.late_starts} open-loop start(s) missed their scheduled arrival (start_lag_ms, start_blocked "
                 "in the recording): the achieved rate is below the requested one")
    note = fallback_note(fallback)
    if note:  # asked for, so still exit 0, but never a clean "complete" line
        line = line.replace(f"batch {verdict}:", f"batch {verdict} WITH FALLBACK:", 1) + f"\n  {note}"
    if code != EXIT_OK:
        line += f"\n  resume (runs what is missing, with the batch's own settings): {resume_command(batch_root)}"
    return line
