"""Run records under ``--logs-dir``: the console mirrored to ``log.txt``, ``args.json`` and ``metrics.json``."""
from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from reid.utils.errors import UserError
from reid.utils.osutils import write_atomically


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


def prepare_logs_dir(logs_dir: str) -> str:
    """Create the logs dir or fail with one line; checked before any expensive work."""
    try:
        os.makedirs(logs_dir, exist_ok=True)
        probe = os.path.join(logs_dir, ".write-test")
        with open(probe, "w") as stream:
            stream.write("ok")
        os.remove(probe)
    except OSError as exc:
        raise UserError(f"--logs-dir {logs_dir}: cannot write there ({exc.strerror})") from exc
    return logs_dir


def start_logging(logs_dir: str) -> None:
    """Mirror stdout and stderr to ``<logs_dir>/log.txt`` until :func:`stop_logging`."""
    stop_logging()
    fpath = os.path.join(logs_dir, "log.txt")
    sys.stdout = Tee(sys.stdout, fpath)
    sys.stderr = Tee(sys.stderr, fpath)


def stop_logging() -> None:
    """Restore the streams that :func:`start_logging` wrapped and close the log file."""
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name)
        if isinstance(stream, Tee):
            stream.close()
            setattr(sys, name, stream.console)


def write_json(fpath: str, data: Any) -> None:
    """Write JSON atomically (temporary file then rename)."""
    def dump(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2)
            stream.write("\n")

    write_atomically(fpath, dump)


def read_json(fpath: str) -> Any:
    with open(fpath, encoding="utf-8") as stream:
        return json.load(stream)


class MetricsLog:
    """``metrics.json``: a dict of named entries (``before``, ``iteration_0``, ``final``...), rewritten
    atomically after each update so that an interrupted run keeps what it measured."""

    def __init__(self, fpath: str, resume: bool = False, write: bool = True):
        self.fpath = fpath
        self.write = write  # False on DDP ranks other than 0: they keep the data but leave the file alone
        self.data: dict[str, Any] = read_json(fpath) if resume and os.path.exists(fpath) else {}

    def __setitem__(self, key: str, value: Any) -> None:
        self.update({key: value})

    def update(self, entries: dict[str, Any], drop: Iterable[str] = ()) -> None:
        """Set ``entries`` and remove the keys ``drop`` (those present) in one write."""
        self.data.update(entries)
        for key in drop:
            self.data.pop(key, None)
        if self.write:
            write_json(self.fpath, self.data)

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def __contains__(self, key: str) -> bool:
        return key in self.data
