"""A torchrun entry point for the fault tests: an adaptation script with one fault injected into one rank.

    torchrun ... tests/faulty_worker.py FAULT RANK ITERATION MARKER SCRIPT [options of SCRIPT]

The process of global rank RANK commits FAULT at the start of the second training epoch of ITERATION (the middle
of the iteration), once per run: it first creates the file MARKER, and a process that finds MARKER runs clean
(the worker group torchrun restarts, on whichever machine). FAULT is ``kill`` (SIGKILL to itself: a lost
worker), ``raise`` (a UserError) or ``hang`` (sleep for an hour: a worker that stops answering).
"""
from __future__ import annotations

import importlib
import os
import signal
import sys
import time

from reid.adaptation import AdaptationRun
from reid.trainers import BaseTrainer
from reid.utils.errors import UserError
from reid.utils.runtime import run_main


def commit(fault: str) -> None:
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif fault == "raise":
        raise UserError("injected fault")
    elif fault == "hang":
        time.sleep(3600)


def inject(fault: str, rank: int, iteration: int, marker: str) -> None:
    """Patch the trainer so that this process commits ``fault`` where the module docstring says."""
    current = {"iteration": -1}
    loader, train = AdaptationRun.loader, BaseTrainer.train

    def tracking_loader(self, indices, labels, at_iteration, *args, **kwargs):
        current["iteration"] = at_iteration
        return loader(self, indices, labels, at_iteration, *args, **kwargs)

    def faulty_train(self, epoch, *args, **kwargs):
        chosen = int(os.environ["RANK"]) == rank and current["iteration"] == iteration and epoch == 1
        if chosen and not os.path.exists(marker):
            open(marker, "w").close()
            print(f"fault: rank {rank} commits {fault} at {time.time():.3f}", file=sys.stderr, flush=True)
            commit(fault)
        return train(self, epoch, *args, **kwargs)

    AdaptationRun.loader = tracking_loader
    BaseTrainer.train = faulty_train


if __name__ == "__main__":
    fault, rank, iteration, marker, script = sys.argv[1:6]
    inject(fault, int(rank), int(iteration), marker)
    sys.argv = [script, *sys.argv[6:]]
    raise SystemExit(run_main(importlib.import_module(os.path.splitext(os.path.basename(script))[0]).main))
