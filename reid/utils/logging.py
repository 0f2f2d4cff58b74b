"""The console of a run mirrored to ``log.txt`` in its logs dir."""
from __future__ import annotations

import contextlib
import os
import sys
from typing import TextIO

from reid.utils.errors import UserError
from reid.utils.osutils import fault_reason
from reid.utils.records import LOG


class Tee:
    """A text stream that writes to the console and to a log file (appending, so a resumed run continues it).

    Each write reaches the file at once, so that a write the system refuses (a full disk, a file-size limit)
    fails where it happens: logging stops (the console keeps the text) and UserError names the log file.
    """

    def __init__(self, console: TextIO, fpath: str):
        self.console = console
        self.fpath = fpath
        self.file = open(fpath, "a", encoding="utf-8")  # noqa: SIM115 (lives as long as the run)

    def write(self, text: str) -> int:
        self.console.write(text)
        if self.file.closed:  # logging stopped; a stream kept from before (a progress bar's) still prints
            return len(text)
        try:
            self.file.write(text)
            self.file.flush()
        except OSError as exc:
            stop_logging()
            raise UserError(f"{self.fpath}: could not be written ({fault_reason(exc)}); stopped, the run's "
                            "checkpoints and metrics are kept") from exc
        return len(text)

    def write_last(self, text: str) -> None:
        """Write ``text`` to the console, and to the file unless the system refuses it: for the line that tells
        why the run stopped, which a full disk must not replace with another error."""
        self.console.write(text)
        with contextlib.suppress(OSError, ValueError):  # ValueError: the file was closed
            self.file.write(text)
            self.file.flush()

    def flush(self) -> None:
        self.console.flush()

    def isatty(self) -> bool:
        return self.console.isatty()

    def close(self) -> None:
        with contextlib.suppress(OSError):  # the text a refused write left in the buffer is lost
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


def print_error(line: str) -> None:
    """Print the line that ends a run on stderr, into log.txt too while the system accepts it."""
    if isinstance(sys.stderr, Tee):
        sys.stderr.write_last(line + "\n")
    else:
        print(line, file=sys.stderr)
