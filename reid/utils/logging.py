"""The console of a run mirrored to ``log.txt`` in its logs dir."""
from __future__ import annotations

import os
import sys
from typing import TextIO

from reid.utils.records import LOG


class Tee:
    """A text stream that writes to the console and to a log file (appending, so a resumed run continues it)."""

    def __init__(self, console: TextIO, fpath: str):
        self.console = console
        self.file = open(fpath, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the run)

    def write(self, text: str) -> int:
        self.console.write(text)
        self.file.write(text)
        return len(text)

    def flush(self) -> None:
        self.console.flush()
        self.file.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def close(self) -> None:
        self.file.close()


def start_logging(logs_dir: str) -> None:
    """Mirror stdout and stderr to ``<logs_dir>/log.txt`` until :func:`stop_logging`."""
    stop_logging()
    fpath = os.path.join(logs_dir, LOG)
    sys.stdout = Tee(sys.stdout, fpath)
    sys.stderr = Tee(sys.stderr, fpath)


def stop_logging() -> None:
    """Restore the streams that :func:`start_logging` wrapped and close the log file."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, Tee):
            stream.close()
            setattr(sys, name, stream.console)
