"""The records of a run under ``--logs-dir``: the names of its files, JSON read and written atomically, and
``metrics.json`` kept up to date as the run goes."""
from __future__ import annotations

import json
import os
from collections.abc import Iterable
from typing import Any

from reid.utils.errors import UserError
from reid.utils.osutils import write_atomically

# The files a run writes under --logs-dir that the project reads back.
CHECKPOINT, BEST_MODEL = "checkpoint.pth.tar", "model_best.pth.tar"
METRICS, ARGS, LOG = "metrics.json", "args.json", "log.txt"


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
