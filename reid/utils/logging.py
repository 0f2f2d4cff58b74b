"""Run records under ``--logs-dir``: the console mirrored to ``log.txt``, ``args.json`` and ``metrics.json``, and
the lock (``run.lock``) that keeps a second run from writing into the same logs dir."""
from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
from collections.abc import Iterable
from typing import Any, TextIO

from reid.utils.errors import UserError
from reid.utils.osutils import fault_reason, remove_stale_temporaries, write_atomically


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


LOCK_NAME = "run.lock"
_held_locks: list[TextIO] = []


def claim_logs_dir(logs_dir: str) -> None:
    """Hold ``<logs_dir>/run.lock`` until :func:`release_logs_dir`, so that a second run started on the same
    logs dir stops at once with one line instead of interleaving its writes with this run's.

    A POSIX record lock (``fcntl.lockf``), because the OS drops it when the process ends however it ends: a
    killed run leaves nothing stuck, and the rank 0 of a worker group that torchrun restarts takes it back. The
    DataLoader's forked workers do not inherit it (``flock`` locks would stay held while they linger). The file
    names its holder and is left in place: deleting a lock file lets two runs each lock a file of their own.
    Once the lock is held, the temporary files of a writer killed mid-write (a previous run) are removed.
    """
    release_logs_dir()
    fpath = os.path.join(logs_dir, LOCK_NAME)
    stream = open(fpath, "a+", encoding="utf-8")  # noqa: SIM115 (held as long as the run)
    try:
        fcntl.lockf(stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        stream.seek(0)
        holder = stream.read().strip()
        stream.close()
        if exc.errno not in (errno.EACCES, errno.EAGAIN):
            raise UserError(f"{fpath}: cannot lock the logs dir ({exc.strerror})") from exc
        raise UserError(f"--logs-dir {logs_dir}: another run is writing there ({holder or fpath}); wait for it "
                        "to end or choose another --logs-dir") from exc
    stream.truncate(0)
    stream.write(f"held by pid {os.getpid()} on {socket.gethostname()}\n")
    stream.flush()
    _held_locks.append(stream)
    remove_stale_temporaries(logs_dir)


def release_logs_dir() -> None:
    """Let another run use the logs dir that :func:`claim_logs_dir` locked (closing the file drops the lock)."""
    while _held_locks:
        _held_locks.pop().close()


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


def print_error(line: str) -> None:
    """Print the line that ends a run on stderr, into log.txt too while the system accepts it."""
    if isinstance(sys.stderr, Tee):
        sys.stderr.write_last(line + "\n")
    else:
        print(line, file=sys.stderr)


def write_json(fpath: str, data: Any) -> None:
    """Write JSON atomically (temporary file then rename)."""
    def dump(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as stream:
            json.dump(data, stream, indent=2)
            stream.write("\n")

    write_atomically(fpath, dump)


def read_json(fpath: str) -> Any:
    """The JSON content of ``fpath``; a truncated or non-JSON file raises UserError naming it."""
    try:
        with open(fpath, encoding="utf-8") as stream:
            return json.load(stream)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{fpath}: not a readable JSON file ({exc})") from exc


def read_metrics(fpath: str) -> dict[str, Any]:
    """The entries of a run's ``metrics.json``, none when the file does not exist."""
    if not os.path.exists(fpath):
        return {}
    data = read_json(fpath)
    if not isinstance(data, dict):
        raise UserError(f"{fpath}: not a run's metrics (expected a JSON object of named entries)")
    return data


class MetricsLog:
    """``metrics.json``: a dict of named entries (``before``, ``iteration_0``, ``final``...), rewritten
    atomically after each update so that an interrupted run keeps what it measured. ``data``: the entries of
    the run being continued (:func:`read_metrics`)."""

    def __init__(self, fpath: str, data: dict[str, Any] | None = None, write: bool = True):
        self.fpath = fpath
        self.write = write  # False on DDP ranks other than 0: they keep the data but leave the file alone
        self.data: dict[str, Any] = dict(data or {})

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
