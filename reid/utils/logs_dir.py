"""A run's logs dir: created and probed before any expensive work, and locked (``run.lock``) so that a second run
does not write into it at the same time."""
from __future__ import annotations

import errno
import fcntl
import os
import socket
from typing import TextIO

from reid.utils.errors import UserError
from reid.utils.osutils import remove_stale_temporaries


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
