"""A run as a person at the command line follows it: one status line that rewrites itself on a
terminal (step, partitions done of total, the stage's own rows/s), plain lines otherwise.

The full Dagster log stays in the run's event log (the UI shows it) and on the console with
``--verbose``; errors are not printed here: the CLI prints the run's failure as one line.
"""

from __future__ import annotations

import logging
import shutil
import time
from typing import TextIO

import dagster as dg

# Dagster puts the structured event and its metadata on every log record it emits.
EVENT_ATTR, META_ATTR = "dagster_event", "dagster_meta"
SKIPPED = "Dependencies for step"


class RunProgress(logging.Handler):
    """Follows one run's events; ``partitions`` is how many days the run covers (0: none)."""

    def __init__(self, stream: TextIO, terminal: bool, steps: int, partitions: int) -> None:
        super().__init__(logging.DEBUG)
        self.stream, self.terminal = stream, terminal
        self.steps, self.partitions = steps, partitions
        self.steps_done = 0
        self.step_started: dict[str, float] = {}
        self.materialized: dict[str, set[str]] = {}
        self.status_shown = False

    def emit(self, record: logging.LogRecord) -> None:
        meta = getattr(record, META_ATTR, None) or {}
        step = meta.get("step_key") or ""
        message = " ".join(str(meta.get("orig_message") or record.getMessage()).split())
        event = getattr(record, EVENT_ATTR, None)
        if event is None:
            # Steps skipped after a failure: the CLI's error line already names the failure.
            if record.levelno >= logging.WARNING and not message.startswith(SKIPPED):
                self.line(f"  warning: {step}: {message}" if step else f"  warning: {message}")
            elif step:  # a stage's own progress: "done of total, rows, rows/s"
                self.status(step, message, plain=True)
            return
        kind = event.event_type_value
        if kind == "STEP_START":
            self.step_started[step] = time.perf_counter()
            self.status(step, "started")
        elif kind == "ASSET_MATERIALIZATION":
            days = self.materialized.setdefault(step, set())
            days.add(event.partition or "")
            if self.partitions > 1:
                self.status(step, f"{len(days)}/{self.partitions} partitions")
        elif kind == "STEP_SUCCESS":
            self.steps_done += 1
            seconds = time.perf_counter() - self.step_started.get(step, time.perf_counter())
            days = len(self.materialized.get(step, ()))
            scope = f", {days} partition(s)" if self.partitions and days else ""
            self.line(f"  {step}: done in {seconds:.1f}s{scope}")
        elif kind == "STEP_UP_FOR_RETRY":
            self.line(f"  {step}: will retry: {message}")

    def status(self, step: str, message: str, plain: bool = False) -> None:
        """On a terminal, rewrite the one status line; otherwise only a stage's own progress
        (already throttled by the stage) becomes a line."""
        text = f"  [{self.steps_done}/{self.steps}] {step}: {message}"
        if not self.terminal:
            if plain:
                self.write(text + "\n")
            return
        width = shutil.get_terminal_size((100, 20)).columns - 1
        self.write("\r\x1b[K" + text[:width])
        self.status_shown = True

    def line(self, text: str) -> None:
        self.clear()
        self.write(text + "\n")

    def clear(self) -> None:
        """Remove the status line, so what follows (an error line, the summary) stands alone."""
        if self.status_shown:
            self.write("\r\x1b[K")
            self.status_shown = False

    def write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()


def progress_logger(handler: RunProgress) -> dg.LoggerDefinition:
    """A Dagster logger that hands every record of the run to ``handler``."""

    def build(_: dg.InitLoggerContext) -> logging.Logger:
        logger = logging.Logger("batch_platform.progress", logging.DEBUG)
        logger.addHandler(handler)
        return logger

    return dg.LoggerDefinition(build, description="the CLI's progress of a run")
