"""Reading a checkpoint without running it: every ``.pth``/``.pth.tar`` a script, ``reid.extract``,
``reid.export`` or ``--pretrained-path`` reads goes through PyTorch's weights-only unpickler.

A pickle can name any function to call while it loads (``os.system`` included). The weights-only unpickler
builds tensors, storages and plain containers (dict, list, tuple, OrderedDict, numbers, strings) and refuses
every other global before calling it. Besides those, the authors' files need exactly :data:`ALLOWED_GLOBALS`,
for the numpy scalars beside their weights (``best_top1``); Python 2 files are read as latin1. (Their Python 3
pickles of protocol 2 also write raw bytes as ``_codecs.encode(text, "latin1")``, which PyTorch's own list
allows: it only turns a string into bytes.)

A file that asks for anything else stops with one line naming it and the global; a user who trusts such a file
names it in the environment variable :data:`TRUST_VARIABLE` (paths separated by ``:``), and that file alone
is read by the full unpickler.
"""
from __future__ import annotations

import os
import pickle
import re
import warnings
from typing import Any

import numpy as np
import torch

from reid.utils.errors import UserError

TRUST_VARIABLE = "REID_TRUSTED_CHECKPOINTS"

try:
    from numpy._core.multiarray import scalar as _numpy_scalar
except ImportError:  # numpy < 2
    from numpy.core.multiarray import scalar as _numpy_scalar


# What a numpy scalar pickles as: scalar(dtype, raw bytes). Each is safe to call on data from anywhere:
# - numpy's ``scalar``, under both module names (numpy 1's ``numpy.core``, numpy 2's ``numpy._core``), copies
#   at most the dtype's item size of bytes into a new scalar; for object dtypes numpy returns the given object
#   itself (which the unpickler had to build already) or refuses, and a structured dtype needs a numpy array,
#   which this list does not allow building;
# - ``numpy.dtype`` parses a type description (a string such as 'f8', or containers of them): it imports
#   nothing and calls no user code;
# - ``Float64DType`` and ``Int64DType``, the classes of the dtypes of numpy's float64 and int64 scalars
#   (open-reid's top-1, counters), are allowed so that the pickle's state (byte order, flags) can be set on a
#   copy of such a dtype; numpy ignores a state set on its built-in dtypes, and calling either class returns
#   the built-in dtype. The state of no other dtype can be set: that of an object dtype could make numpy read
#   a pointer from the file's bytes. (Before numpy 1.25 every dtype was of the one class ``numpy.dtype``, which
#   is why this project needs numpy >= 1.25.)
ALLOWED_GLOBALS: list[Any] = [
    (_numpy_scalar, "numpy.core.multiarray.scalar"),
    (_numpy_scalar, "numpy._core.multiarray.scalar"),
    np.dtype,
    np.dtypes.Float64DType,
    np.dtypes.Int64DType,
]

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")
_DETAIL = "WeightsUnpickler error:"


def trusted_paths() -> set[str]:
    """The files named in :data:`TRUST_VARIABLE`, resolved (links followed), so that the same file given by
    another path is trusted too."""
    entries = os.environ.get(TRUST_VARIABLE, "").split(os.pathsep)
    return {os.path.realpath(entry) for entry in entries if entry.strip()}


def load_weights_only(fpath: str, label: str = "") -> Any:
    """``torch.load`` of ``fpath`` on the CPU that runs nothing the file names: the weights-only unpickler with
    :data:`ALLOWED_GLOBALS`, Python 2 byte strings read as latin1. A file listed in :data:`TRUST_VARIABLE` is read
    by the full unpickler instead.

    A file that asks for another global raises UserError naming ``label`` (default ``fpath``), the global and how
    to trust the file, before anything of it is called. Other failures (not a torch file, truncated) propagate
    for the caller to name; the weights-only unpickler's own one as an UnpicklingError with its reason alone,
    without torch's advice to load the file with the full unpickler.
    """
    label = label or fpath
    if os.path.realpath(fpath) in trusted_paths():
        return torch.load(fpath, map_location="cpu", weights_only=False, encoding="latin1")
    try:
        with torch.serialization.safe_globals(ALLOWED_GLOBALS), warnings.catch_warnings():
            # torch warns that pickle arguments are for the full unpickler, yet hands the encoding to both.
            warnings.filterwarnings("ignore", message="pickle_load_args only works")
            return torch.load(fpath, map_location="cpu", weights_only=True, encoding="latin1")
    except pickle.UnpicklingError as exc:
        message = str(exc)
        found = _GLOBAL.search(message)
        if found:
            raise UserError(
                f"{label}: refused, loading it would call {found.group(1)}, which a checkpoint of weights does not "
                f"need (nothing of the file ran); if you trust this file, name it in {TRUST_VARIABLE}={fpath} "
                "(see docs/runs.md)") from exc
        raise pickle.UnpicklingError(_reason(message)) from exc


def _reason(message: str) -> str:
    """The weights-only unpickler's own reason, without torch's advice before it."""
    _, marker, detail = message.partition(_DETAIL)
    lines = [line.strip() for line in (detail if marker else message).splitlines() if line.strip()]
    return lines[0] if lines else "unpickling failed"
