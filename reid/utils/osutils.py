"""File-system helpers: the one atomic write used for checkpoints, JSON records and pictures."""
from __future__ import annotations

import os
from typing import Callable


def write_atomically(fpath: str, write: Callable[[str], None]) -> None:
    """Call ``write`` on a temporary file beside ``fpath``, flush it to disk, then rename it over ``fpath``: a
    process killed mid-write leaves the previous file intact and no half file behind.

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
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
