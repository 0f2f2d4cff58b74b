"""Worker groups that torchrun restarts (``--max-restarts``) or spreads over several machines.

Why this exists: torchrun's agent keeps one TCPStore for the whole run and hands it to every worker group it
starts. The keys an earlier group wrote there (each rank's gloo or NCCL address) are still present when a
restarted group sets up its process group, so a new rank may read a dead rank's address and fail
("Gloo connectFullMesh failed ... Connection refused") or wait for a peer that never comes.
``TORCHELASTIC_RESTART_COUNT`` cannot name the group either: each machine's agent counts its own restarts, and
an agent restarted by another machine's failure (a change of membership) does not count it.

:func:`join_worker_group` gives each worker group a namespace of that store that no earlier group used. Rank 0
draws the next generation number (an atomic counter in the store) and announces it; every other rank checks in
under the announced generation with a nonce of its own and waits until rank 0 acknowledges that nonce. A rank
that read an earlier group's announcement gets no acknowledgement there (that rank 0 is gone) and moves on
when the announcement changes. The first generation also records the run's id, which checkpoints carry, so
that a restarted group can tell its own run's checkpoint in the logs dir from an older run's.
"""
from __future__ import annotations

import os
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta

import torch.distributed as dist

from reid.utils.errors import UserError

ROOT = "ssg/"
POLL_SECONDS = 0.05


@dataclass(frozen=True)
class WorkerGroup:
    """One worker group of a torchrun run: its own namespace of the agent's store, its generation (1 for the
    run's first group, n + 1 after n restarts) and the run's id (the same for every group of the run)."""

    store: dist.Store
    generation: int
    run_id: str

    @property
    def restart(self) -> int:
        """How many worker groups of this run came before this one."""
        return self.generation - 1


def join_worker_group(rank: int, world_size: int, timeout: timedelta) -> WorkerGroup | None:
    """This process's worker group, or None when torchrun's agent does not share its store with the workers
    (not launched by torchrun, or ``TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1``): every group then gets a fresh
    store, and nothing is left to collide with.

    Every rank of the group must call it; it returns once rank 0 has acknowledged this rank, or raises
    ``dist.DistStoreError`` after ``timeout``.
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != str(True):
        if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
            raise UserError("a restarted worker group needs torchrun's shared store to find its run's checkpoint: "
                            "unset TORCH_DISABLE_SHARE_RDZV_TCP_STORE, or continue with --resume-from LOGS_DIR")
        return None
    agent_store = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), world_size,
                                is_master=False, timeout=timeout)
    deadline = time.monotonic() + timeout.total_seconds()
    generation = _announce(agent_store, world_size) if rank == 0 else _check_in(agent_store, rank, deadline)
    run_id = agent_store.get(ROOT + "run").decode()
    return WorkerGroup(dist.PrefixStore(f"{ROOT}{generation}/group/", agent_store), generation, run_id)


def _announce(store: dist.Store, world_size: int) -> int:
    """Rank 0: open the next generation and acknowledge every rank that checks in under it."""
    generation = store.add(ROOT + "generation", 1)
    if generation == 1:
        store.set(ROOT + "run", uuid.uuid4().hex)
    store.set(ROOT + "current", str(generation))
    for rank in range(1, world_size):
        nonce = store.get(f"{ROOT}{generation}/hello/{rank}")  # waits for the key, up to the store's timeout
        store.set(f"{ROOT}{generation}/ack/{rank}", nonce)
    return generation


def _check_in(store: dist.Store, rank: int, deadline: float) -> int:
    """A rank other than 0: the generation whose rank 0 acknowledged this process's nonce."""
    nonce = uuid.uuid4().hex
    while time.monotonic() < deadline:
        announced = store.get(ROOT + "current").decode()
        store.set(f"{ROOT}{announced}/hello/{rank}", nonce)
        ack = f"{ROOT}{announced}/ack/{rank}"
        while time.monotonic() < deadline:
            if store.check([ack]) and store.get(ack).decode() == nonce:
                return int(announced)
            if store.get(ROOT + "current").decode() != announced:
                break  # that announcement was an earlier group's; a newer rank 0 has announced since
            time.sleep(POLL_SECONDS)
    raise dist.DistStoreError(f"rank {rank}: rank 0 of this worker group did not answer within --dist-timeout")
