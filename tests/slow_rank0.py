"""A torchrun entry point for the waiting tests: an adaptation script whose rank 0 takes longer over its work alone.

    torchrun ... tests/slow_rank0.py SECONDS SCRIPT [options of SCRIPT]

Rank 0 sleeps SECONDS before its first DBSCAN (the other ranks wait in the grouping's share) and before its first
checkpoint write (they wait at the iteration's closing barrier): with SECONDS above ``--dist-timeout``, each is a
legitimate step longer than the timeout.
"""
from __future__ import annotations

import functools
import importlib
import os
import sys
import time

import reid.cluster
import reid.utils.serialization
from reid.utils.runtime import run_main


def slowed_once(function, seconds: float):
    """``function``, whose first call on rank 0 starts with a sleep of ``seconds``."""
    first_call = [int(os.environ["RANK"]) == 0]

    @functools.wraps(function)
    def slowed(*args, **kwargs):
        if first_call[0]:
            first_call[0] = False
            print(f"slow: rank 0 works alone {seconds:g} s longer in {function.__name__}", file=sys.stderr, flush=True)
            time.sleep(seconds)
        return function(*args, **kwargs)

    return slowed


if __name__ == "__main__":
    seconds, script = float(sys.argv[1]), sys.argv[2]
    # Patched before the script imports them, so that its own names are the slowed functions.
    reid.cluster.cluster_labels = slowed_once(reid.cluster.cluster_labels, seconds)
    reid.utils.serialization.save_checkpoint = slowed_once(reid.utils.serialization.save_checkpoint, seconds)
    sys.argv = [script, *sys.argv[3:]]
    raise SystemExit(run_main(importlib.import_module(os.path.splitext(os.path.basename(script))[0]).main))
