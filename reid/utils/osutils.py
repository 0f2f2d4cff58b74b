"""File-system helpers: the one atomic write used for checkpoints, JSON records and pictures."""
from __future__ import annotations

import contextlib
import os
import re
from typing import Callable

from reid.utils.errors import UserError

_TEMPORARY_NAME = ".{name}.{pid}.tmp"
_TEMPORARY_PATTERN = re.compile(r"^\..+\.(\d+)\.tmp$")


def write_atomically(fpath: str, write: Callable[[str], None]) -> None:
    """Call ``write`` on a temporary file beside ``fpath``, flush it to disk, then rename it over ``fpath``: a
    process killed mid-write leaves the previous file intact. Its half-written temporary file
    (``.<name>.<pid>.tmp``, hidden) stays until :func:`remove_stale_temporaries` finds it.

    A write that the system refuses (no space left, a file-size limit, an I/O error, quota) raises UserError
    naming ``fpath`` and the cause, whatever the writer raised around it (:func:`storage_fault`): the run stops
    with one line and the previous file is still the one in place.

    The temporary name is built rather than made by ``tempfile.mkstemp`` so the file gets the usual
    permissions (mkstemp's are owner-only).
    """
    folder, name = os.path.split(os.path.abspath(fpath))
    tmp = os.path.join(folder, _TEMPORARY_NAME.format(name=name, pid=os.getpid()))
    try:
        write(tmp)
        with open(tmp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, fpath)
    except Exception as exc:
        error = storage_error(exc, fpath, f"the previous {name} is kept")
        if error is None:
            raise
        raise error from exc
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)


def storage_fault(exc: BaseException) -> OSError | None:
    """The first OSError in ``exc``'s chain (itself, then what it was raised from or while handling), None
    when there is none: the system's refusal that a writer may wrap in its own error (torch.save raises a
    RuntimeError about its zip writer while handling the OSError of a full disk)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError):
            return current
        seen.add(id(current))
        current = current.__cause__ or (None if current.__suppress_context__ else current.__context__)
    return None


def storage_error(exc: BaseException, what: str, kept: str) -> UserError | None:
    """The one line of a write that the system refused (:func:`storage_fault`) to ``what``, saying what is
    ``kept``; None when ``exc`` is another failure."""
    fault = storage_fault(exc)
    if fault is None:
        return None
    return UserError(f"{what}: could not be written ({fault_reason(fault)}); stopped, {kept}")


def fault_reason(fault: OSError) -> str:
    """The system's words for ``fault`` (``No space left on device``, ``File too large``...)."""
    return fault.strerror or (os.strerror(fault.errno) if fault.errno else str(fault))


def remove_stale_temporaries(folder: str) -> None:
    """Remove the temporary files that :func:`write_atomically` left under ``folder`` (subfolders included)
    when its process died mid-write: Python runs no ``finally`` on SIGKILL, nor on the SIGTERM with which
    torchrun stops a worker group it restarts. Files of a live process are kept."""
    for root, _, names in os.walk(folder):
        for name in names:
            match = _TEMPORARY_PATTERN.match(name)
            if match and not _process_exists(int(match.group(1))):
                with contextlib.suppress(OSError):
                    os.remove(os.path.join(root, name))


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        pass
    return True
