"""Where ``analyzer --live`` keeps an open batch: a spool file on disk, not a list in memory.

Why a file: a batch may stay open for a day (100 Hz × several GPUs: tens of millions of messages,
about 1 KB each as Python maps), so the live analyzer writes the open batch's messages as they arrive to a
recording (shared.recording's writer and format, the collector's own) and at batch.end analyses that
file through the batch analyzer's streaming reader (``analyzer.columnar.decode_file`` → ``to_batch``),
as ``--batch`` reads a recording. Memory while a batch is open is then bounded by time (the look-back
per source), whatever the batch's length; the analysis at batch.end costs what ``--batch`` costs on the
same recording; the results are a replay's (the same BatchData, array for array, as
``analyzer.stream.build`` on the message list the live analyzer used to hold). Not chosen: the open
batch as typed columns in memory (``columnar.Decoder``, ~0.3 KB a sample instead of ~1 KB): still
grows with hours.

Where: one directory per process, ``analyzer-live-<pid>-<start ms>-<random>`` in ``--spool-dir``
(default: the system temp directory), one ``batch-N.msgpack`` per open batch, deleted once analysed,
the directory at exit, also on SIGTERM (how the proxy and ``collector --serve`` stop their live
analyzer: analyzer.live.run_live). A process killed otherwise (SIGKILL, Windows' TerminateProcess, power
loss) leaves its directory behind; the next live analyzer with the same spool directory removes those whose
process is gone (by pid and start time, so a reused pid is not mistaken for the dead one). A leftover
never disturbs another run: each run writes only its own directory. Disk: a spool is as large as the
collector's recording of the same batch (about 110 MB per GPU-hour at 100 Hz).
"""
from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator

import psutil

from shared.logs import get_logger
from shared.recording import RecordingReader, RecordingWriter

log = get_logger("analyzer.live_spool")

PREFIX = "analyzer-live-"
_DIR_RE = re.compile(re.escape(PREFIX) + r"(?P<pid>\d+)-(?P<ms>\d+)-.+")
START_TOLERANCE_MS = 1000  # a process's start time as psutil reports it, to the second
FLUSH_S = 1.0              # the spool is read only after it is closed: flushing is for a killed process's leftover

Message = tuple[str, dict[str, Any]]


def _started_ms(pid: int) -> int | None:
    """When process ``pid`` started (ms since the epoch); None when there is no such process."""
    try:
        return int(psutil.Process(pid).create_time() * 1000)
    except psutil.AccessDenied:
        return -1  # someone else's: alive, as far as we may know
    except (psutil.Error, OSError, ValueError):
        return None


def is_stale(name: str) -> bool:
    """True for a spool directory name whose process is gone (its pid free or reused by a later process)."""
    m = _DIR_RE.fullmatch(name)
    if m is None:
        return False
    started = _started_ms(int(m["pid"]))
    return started is None or (started >= 0 and abs(started - int(m["ms"])) > START_TOLERANCE_MS)


def remove_stale(root: Path) -> int:
    """Remove the spool directories in ``root`` left by live analyzers that are gone; returns how many."""
    removed = 0
    try:
        entries = [p for p in Path(root).iterdir() if p.name.startswith(PREFIX)]
    except OSError:
        return 0
    for d in entries:
        if d.is_dir() and not d.is_symlink() and is_stale(d.name):
            shutil.rmtree(d, ignore_errors=True)
            if not d.exists():
                removed += 1
                log.info("live_spool_leftover_removed", path=str(d), note="left by a live analyzer that was killed")
    return removed


class SpoolBatch:
    """One open batch's messages, in arrival order, in a recording file. A write that fails (disk full,
    spool directory gone) does not stop the live analyzer: the batch keeps the ``problem`` and is not
    analysed (the per-request rows go on without it)."""

    def __init__(self, path: Path, error: OSError | None = None):
        self.path = path
        self.messages = 0
        self.events = 0                                   # not telemetry: batch markers, requests
        self.batch_start: dict[str, Any] | None = None    # the first batch.start written
        self.problem: str | None = None
        self._writer: RecordingWriter | None = None
        if error is not None:  # the spool directory could not be made
            self._fail(error)
            return
        try:
            self._writer = RecordingWriter(path, meta={"spool": "analyzer --live"}, flush_s=FLUSH_S)
        except OSError as exc:
            self._fail(exc)

    def write(self, topic: str, payload: dict[str, Any], event: bool = False) -> None:
        if event:
            self.events += 1
            if self.batch_start is None and topic == "batch.start":
                self.batch_start = payload
        if self._writer is None:
            return
        try:
            self._writer.write(topic, payload)
        except (OSError, ValueError, TypeError) as exc:
            self._fail(exc)
            return
        self.messages += 1

    def _fail(self, exc: Exception) -> None:
        self.problem = (f"{self.path}: cannot write the live batch's spool file ({exc}); free space there or "
                        "start the live analyzer with --spool-dir DIR on a disk with room (about 110 MB per "
                        "GPU-hour at 100 Hz)")
        log.error("live_spool_write_failed", path=str(self.path), problem=str(exc),
                  note="this batch is not analysed live; the collector's own analysis of its recording is")
        self.close()

    def close(self) -> None:
        """Done writing (idempotent): the file is complete and can be read."""
        if self._writer is not None:
            try:
                self._writer.close()
            except OSError as exc:
                self._writer = None
                self._fail(exc)
            self._writer = None

    def __iter__(self) -> Iterator[Message]:
        """The messages as written (after ``close``)."""
        self.close()
        for topic, payload in RecordingReader(self.path):
            yield topic, payload

    def data(self, lookback_s: float):
        """The batch's BatchData, read from the file as ``--batch`` reads a recording: its GPU samples
        in a columnar copy beside it, read a slab of time at a time (memory: a slab, not the batch)."""
        from analyzer import columnar

        self.close()
        if self.problem:
            raise OSError(self.problem)
        data, problem = columnar.load_batch(self.path, lookback_s)
        if problem:
            log.warning("live_spool_cut", path=str(self.path), problem=problem)
        return data

    def remove(self) -> None:
        from analyzer import columnar

        self.close()
        shutil.rmtree(columnar.copy_dir(self.path), ignore_errors=True)
        try:
            self.path.unlink(missing_ok=True)
        except OSError as exc:  # (Windows: still open elsewhere) the directory goes at exit or next start
            log.warning("live_spool_not_removed", path=str(self.path), problem=str(exc))


class Spool:
    """This process's spool directory (made at the first batch) and its batch files."""

    def __init__(self, root: Path | None = None):
        self.root = Path(root) if root is not None else Path(tempfile.gettempdir())
        self.dir: Path | None = None
        self._count = 0

    def remove_stale(self) -> int:
        return remove_stale(self.root)

    def open_batch(self) -> SpoolBatch:
        self._count += 1
        name = f"batch-{self._count}.msgpack"
        try:
            d = self._dir()
        except OSError as exc:
            return SpoolBatch(self.root / name, error=exc)
        return SpoolBatch(d / name)

    def _dir(self) -> Path:
        if self.dir is None or not self.dir.is_dir():
            self.root.mkdir(parents=True, exist_ok=True)
            started = _started_ms(os.getpid())
            self.dir = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-{max(started or 0, 0)}-", dir=self.root))
            log.info("live_spool", path=str(self.dir))
        return self.dir

    def close(self) -> None:
        """Remove this process's spool directory (at exit)."""
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None
