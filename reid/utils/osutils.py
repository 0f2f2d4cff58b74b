"""File-system helpers: the one atomic write used for checkpoints, JSON records and pictures."""
from __future__ import annotations

import contextlib
import os
from typing import Callable

from reid.utils.errors import UserError


def write_atomically(fpath: str, write: Callable[[str], None]) -> None:
    """Call ``write`` on a temporary file beside ``fpath``, flush it to disk, then rename it over ``fpath``: a
    process killed mid-write leaves the previous file intact and no half file behind.

    A write that the system refuses (no space left, I/O error, quota) raises UserError naming ``fpath``: the run
    stops with one line and the previous file is still the one in place.

    The temporary name is built rather than made by ``tempfile.mkstemp`` so the file gets the usual
    permissions (mkstemp's are owner-only).
    """
    folder, name = os.path.split(os.path.abspath(fpath))
    tmp = os.path.join(folder, f".{name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        with open(tmp, "rb+") as stream:
            os.fsync(stream.fileno())
        os.replace(tmp, fpath)
    except OSError as exc:
        raise UserError(f"{fpath}: could not be written ({exc.strerror or exc}); stopped, the previous "
                        f"{name} is kept") from exc
    finally:
        with contextlib.suppress(OSError):
            os.remove(tmp)
