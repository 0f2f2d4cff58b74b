"""A run survives a lost worker: torchrun restarts resume from the run's newest checkpoint, on one machine or two
(two agents on the loopback), and a rank that stops answering ends the run within --dist-timeout; a rank 0 working
alone longer than --dist-timeout is no lost worker.

Every run is SSG++ (two iterations of two epochs, the labelled set drawn at iteration 1) on two CPU processes
(gloo); faults come from ``tests/faulty_worker.py``. The subprocess timeouts are generous: they only prove that
nothing hangs.
"""
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
from conftest import REPO, adapt_argv
from records import assert_same_entry, results

from reid.utils.elastic import join_worker_group
from reid.utils.serialization import load_checkpoint

pytestmark = pytest.mark.slow

FAULTY_WORKER = str(REPO / "tests" / "faulty_worker.py")
SLOW_RANK0 = str(REPO / "tests" / "slow_rank0.py")
NO_HANG = 600  # seconds; a hung run would otherwise wait torch's 30 minutes
# Unbuffered: each rank's line reaches the shared pipe in one write; PYTHONPATH: faulty_worker imports reid.
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)}


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def torchrun(launcher, data_dir, source, logs, fault=None, options=(), slow=None):
    """The command of one torchrun agent running semitraining.py, with ``fault`` = (what, rank, iteration)
    injected once (the marker file beside the logs dir remembers it was), or with rank 0 working alone ``slow``
    seconds longer (tests/slow_rank0.py)."""
    entry = [str(REPO / "semitraining.py")]
    if slow:
        entry = [SLOW_RANK0, str(slow), entry[0]]
    if fault:
        what, rank, iteration = fault
        entry = [FAULTY_WORKER, what, str(rank), str(iteration), f"{logs}.fault", entry[0]]
    return [sys.executable, "-m", "torch.distributed.run", *launcher, *entry,
            *adapt_argv(data_dir, logs, source, "--iteration", "2", "--epochs", "2", "--label-iteration", "1",
                        "--gpu-devices", "cpu", *options)]


def run_agents(commands):
    """Run the agents together; returns each one's exit status and output."""
    agents = [subprocess.Popen(command, cwd=REPO, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True) for command in commands]
    try:
        outputs = [agent.communicate(timeout=NO_HANG)[0] for agent in agents]
    finally:
        for agent in agents:
            agent.kill()
    return [agent.returncode for agent in agents], outputs


def standalone(nproc=2, restarts=0):
    return ["--standalone", "--nproc_per_node", str(nproc), "--max-restarts", str(restarts)]


def read_json(path):
    return json.loads(path.read_text())


@pytest.fixture(scope="module")
def undisturbed(tiny_pair, source_checkpoint, tmp_path_factory):
    """The records every disturbed run must end with. Its rank 0 works alone (its first DBSCAN, its first
    checkpoint) 6.5 s longer than usual, and --dist-timeout is 5 s: the other ranks wait for it, and the runs below,
    at the default timeout, end with the same records."""
    logs = tmp_path_factory.mktemp("undisturbed")
    command = torchrun(standalone(), tiny_pair, source_checkpoint, logs, options=["--dist-timeout", "5"], slow=6.5)
    (status,), (output,) = run_agents([command])
    assert status == 0, output[-3000:]
    assert [line for line in output.splitlines() if line.startswith("slow: ")] == [
        "slow: rank 0 works alone 6.5 s longer in cluster_labels",
        "slow: rank 0 works alone 6.5 s longer in save_checkpoint"]
    return logs


def assert_same_records(logs, reference):
    """The records of an undisturbed run: metrics within 1e-6, the same labelled set, checkpoint state and
    files."""
    resumed, expected = (results(read_json(d / "metrics.json")) for d in (logs, reference))
    assert list(resumed) == list(expected) == ["before", "iteration_0", "iteration_1"]
    for key, entry in expected.items():
        assert_same_entry(resumed[key], entry, rel=0, abs=1e-6)
    assert read_json(logs / "labelled_set.json") == read_json(reference / "labelled_set.json")
    ours, theirs = (load_checkpoint(str(d / "checkpoint.pth.tar")) for d in (logs, reference))
    assert (ours["epoch"], ours["eps"], ours["best_top1"]) == (theirs["epoch"], theirs["eps"], theirs["best_top1"])
    for name, weight in theirs["state_dict"].items():
        torch.testing.assert_close(ours["state_dict"][name], weight, rtol=0, atol=1e-6, msg=name)
    assert sorted(os.listdir(logs)) == sorted(os.listdir(reference))


def test_restarted_worker_group_resumes_to_the_undisturbed_records(tiny_pair, source_checkpoint, undisturbed,
                                                                   tmp_path):
    logs = tmp_path / "logs"
    command = torchrun(standalone(restarts=1), tiny_pair, source_checkpoint, logs, fault=("kill", 1, 1))
    (status,), (output,) = run_agents([command])
    assert status == 0, output[-3000:]
    assert "fault: rank 1 commits kill" in output
    log = (logs / "log.txt").read_text()  # rank 0's console, both worker groups
    assert "worker group restarted (restart 1): continuing this run from" in log and "at iteration 1" in log
    assert log.count("before adaptation:") == 1  # the restarted group evaluated nothing twice
    assert_same_records(logs, undisturbed)


def test_two_machines_on_the_loopback_survive_losing_rank_0(tiny_pair, source_checkpoint, undisturbed, tmp_path):
    """Two agents meet at a c10d rendezvous, one process each; rank 0 (which holds the logs dir) dies in
    iteration 1 and both agents restart their worker: the run ends with the records of one machine's."""
    logs = tmp_path / "logs"
    launcher = ["--nnodes", "2", "--nproc_per_node", "1", "--max-restarts", "1", "--rdzv_backend", "c10d",
                "--rdzv_endpoint", f"127.0.0.1:{free_port()}", "--rdzv_id", "two-machines"]
    agent = torchrun(launcher, tiny_pair, source_checkpoint, logs, fault=("kill", 0, 1))
    statuses, outputs = run_agents([agent, agent])
    assert statuses == [0, 0], "\n".join(output[-3000:] for output in outputs)
    output = "".join(outputs)
    assert "fault: rank 0 commits kill" in output
    # Both ranks trained on the same pseudo-labels in every iteration, the restarted group's included.
    digests = re.findall(r"rank (\d): pseudo-labels digest ([0-9a-f]{12})", output)
    per_rank = [[digest for rank, digest in digests if rank == str(r)] for r in (0, 1)]
    assert len(per_rank[0]) == 3 and per_rank[0] == per_rank[1]  # iterations 0, 1 (killed), 1 again
    assert_same_records(logs, undisturbed)


def test_a_rank_that_stops_answering_ends_the_run_within_dist_timeout(tiny_pair, source_checkpoint, tmp_path):
    """Rank 1 hangs in iteration 0: rank 0 gives up after --dist-timeout 5 s with one line, and torchrun stops
    the hung rank (instead of torch's 30 minutes)."""
    logs = tmp_path / "logs"
    command = torchrun(standalone(), tiny_pair, source_checkpoint, logs, fault=("hang", 1, 0),
                       options=["--iteration", "1", "--dist-timeout", "5"])
    (status,), (output,) = run_agents([command])
    assert status != 0
    errors = [line for line in output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, output[-3000:]
    cause = re.fullmatch(r"error: rank 0: lost the other ranks \((.+)\): another rank .*--dist-timeout.*", errors[0])
    assert cause and re.search("timed out|timeout", cause.group(1), re.IGNORECASE), errors[0]  # gloo's words vary
    assert list(results(read_json(logs / "metrics.json"))) == ["before"]


def join_in_threads(ranks, world_size, delays):
    """Each of ``ranks`` joins a worker group from its own thread, after its delay; returns rank -> group."""
    groups = {}

    def join(rank):
        time.sleep(delays[rank])
        groups[rank] = join_worker_group(rank, world_size, timedelta(seconds=30))

    threads = [threading.Thread(target=join, args=(rank,)) for rank in ranks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return groups


def test_a_restarted_group_never_reads_an_earlier_groups_keys(monkeypatch):
    """The cause of the restarted groups that could not form: the agent's store keeps the earlier group's
    keys. Here rank 1 of the second group joins before its rank 0 and first reads the first group's
    announcement; it still ends in the second group's own namespace, with the run's id."""
    agent_store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False)
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.setenv("MASTER_PORT", str(agent_store.port))
    first = join_in_threads([0, 1], 2, {0: 0.0, 1: 0.0})
    first[0].store.set("rank0-address", "dead")
    second = join_in_threads([0, 1], 2, {0: 0.5, 1: 0.0})
    assert [first[r].generation for r in (0, 1)] == [1, 1] and [second[r].generation for r in (0, 1)] == [2, 2]
    assert first[0].run_id == first[1].run_id == second[0].run_id == second[1].run_id
    assert not second[1].store.check(["rank0-address"]) and first[1].store.get("rank0-address") == b"dead"
    assert (first[0].restart, second[0].restart) == (0, 1)
