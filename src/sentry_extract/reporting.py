"""How a run shows what it does, chosen by the command line.

- on a terminal: a progress bar per stream (rows, requests, rate, rate-limit waits),
  with warnings printed above the bars;
- elsewhere (cron, CI): plain log lines, warnings and errors only unless `--debug`;
- `--log-format json`: one JSON object per event on stderr, for log collectors.
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from rich.console import Console

from sentry_extract.events import event_of

if TYPE_CHECKING:  # imported when bars are shown: a run in cron or CI shows none
    from rich.progress import Progress, TaskID

LOGGER = "sentry_extract"
TEXT = "text"
JSON = "json"
LOG_FORMATS = (TEXT, JSON)


class JsonFormatter(logging.Formatter):
    """`{"time": ..., "level": ..., "event": ..., "message": ..., <fields>}` per line."""

    def format(self, record: logging.LogRecord) -> str:
        event, fields = event_of(record)
        document: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname.lower(),
            "event": event or "log",
            "message": record.getMessage(),
            **fields,
        }
        if record.exc_info:
            document["traceback"] = self.formatException(record.exc_info)
        return json.dumps(document, default=str, ensure_ascii=False)


class ProgressHandler(logging.Handler):
    """Turns stream events into progress bars; prints other records above them."""

    def __init__(self, progress: Progress) -> None:
        super().__init__()
        self.progress = progress
        self.tasks: dict[str, TaskID] = {}
        self.started: dict[str, float] = {}
        self.finished: set[str] = set()  # streams whose row says how they ended
        self.guard = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        event, fields = event_of(record)
        stream = str(fields.get("stream", ""))
        with self.guard:
            if event == "stream_start":
                self.started[stream] = time.monotonic()
                self.tasks[stream] = self.progress.add_task(
                    stream, total=None, rows=0, requests=0, rate="", note=""
                )
            elif event == "page" and stream in self.tasks:
                seconds = max(time.monotonic() - self.started[stream], 1e-6)
                rows = int(fields.get("total_rows", 0))
                self.progress.update(
                    self.tasks[stream],
                    rows=rows,
                    requests=fields.get("requests", 0),
                    rate=f"{rows / seconds:,.0f} rows/s",
                    note="",
                )
            elif event == "checkpoint" and stream in self.tasks:
                self.progress.update(
                    self.tasks[stream], note=f"checkpoint {fields.get('checkpoints')}"
                )
            elif event == "rate_limit_wait":  # the client's: any stream still reading waits
                for name, task in self.tasks.items():
                    if name not in self.finished:
                        self.progress.update(
                            task, note=f"waiting {fields.get('seconds')}s (rate limit)"
                        )
            elif event == "stream_end" and stream in self.tasks:
                self.finished.add(stream)
                self.progress.update(
                    self.tasks[stream],
                    rows=fields.get("rows", 0),
                    requests=fields.get("requests", 0),
                    note=str(fields.get("status", "")),
                    total=1,
                    completed=1,
                )
            elif record.levelno >= logging.WARNING or (
                event is None and record.levelno >= self.level
            ):
                self.progress.console.print(self.format(record), markup=False, highlight=False)


def progress_bars(console: Console) -> Progress:
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("{task.description:<14}"),
        TextColumn("{task.fields[rows]:>9,} rows"),
        TextColumn("{task.fields[requests]:>6} requests"),
        TextColumn("{task.fields[rate]:>14}"),
        TimeElapsedColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        transient=False,
    )


class Reporting:
    """What `reporting` set up; `finish` ends the progress bars early."""

    def __init__(self, progress: Progress | None) -> None:
        self.progress = progress

    def finish(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None


@contextmanager
def reporting(log_format: str, debug: bool) -> Iterator[Reporting]:
    """Send the package's log records to the right place for as long as the block runs."""
    root = logging.getLogger(LOGGER)
    handler: logging.Handler
    progress: Progress | None = None
    if log_format == JSON:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(JsonFormatter())
        level = logging.DEBUG if debug else logging.INFO
    elif sys.stderr.isatty() and not debug:
        progress = progress_bars(Console(stderr=True))
        handler = ProgressHandler(progress)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
        level = logging.INFO
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%H:%M:%S"))
        level = logging.DEBUG if debug else logging.WARNING
    handler.setLevel(level)
    if log_format != JSON:  # the summary and its error line say how the run ended
        handler.addFilter(lambda record: event_of(record)[0] != "run_end")
    root.handlers[:] = [handler]
    root.setLevel(level)
    shown = Reporting(progress)
    if progress is not None:
        progress.start()
    try:
        with _others_as_json(handler) if log_format == JSON else nullcontext():
            yield shown
    finally:
        shown.finish()


@contextmanager
def _others_as_json(handler: logging.Handler) -> Iterator[None]:
    """Warnings of the libraries underneath (and Python's own) as JSON lines too: a JSON
    log holds nothing else."""
    top = logging.getLogger()
    ours = logging.getLogger(LOGGER)
    others = logging.StreamHandler(sys.stderr)
    others.setFormatter(handler.formatter)
    others.setLevel(logging.WARNING)
    saved = top.handlers[:], ours.propagate
    top.handlers[:] = [others]
    ours.propagate = False
    logging.captureWarnings(True)
    try:
        yield
    finally:
        logging.captureWarnings(False)
        top.handlers[:], ours.propagate = saved
