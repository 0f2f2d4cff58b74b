"""The k-reciprocal distances split across ranks equal one process's, bit for bit; and ranks waiting for rank 0's
work alone wait as long as it takes, but not for a rank 0 that was killed or ended its run.

Three gloo processes of one thread each compute every case once alone (the single-process path, in the same
process: same kernels, same thread count) and once together, then compare; then they cut their process group's
timeout to 1 s and wait for rank 0's work alone (2.5 s). Two more lose their rank 0.
"""
import multiprocessing
import os
import re
import signal
import sys
import time
from datetime import timedelta

import numpy as np
import pytest
import torch
import torch.distributed as dist

import reid.rerank as rerank
from reid.cluster import cluster_labels, compute_eps
from reid.evaluators import evaluate_features
from reid.rerank import re_ranking, re_ranking_query_gallery
from reid.utils.errors import UserError
from reid.utils.runtime import Runtime, run_main, start_heartbeat
from tests.rerank_reference import clustered_features, squared_distances

WORLD_SIZE = 3
# (name, block elements or None for the default, num target, num source, k1, k2, lambda): small blocks give every
# rank several blocks of rows (tiles, encodings, expansion, Jaccard rows); the default leaves one block to some
# steps, which one rank computes while the others have none.
SELF_CASES = [("blocks", 2000, 160, 60, 20, 6, 0.1), ("default", None, 97, 40, 7, 3, 0.3),
              ("no_source", 1500, 120, 30, 5, 1, 0.0)]
QUERY_GALLERY_CASES = [("blocks", 2000, 50, 90), ("default", None, 30, 40)]
DIST_TIMEOUT = 1.0
DEFAULT_BLOCK = rerank._BLOCK_ELEMENTS
WORK_SECONDS = 2.5  # rank 0's step alone, longer than the process group's timeout


def compare_self(name, block, num, num_source, k1, k2, lambda_value):
    """Rank 0: the single process's and the split sparse distance, dense distance and DBSCAN labels."""
    rerank._BLOCK_ELEMENTS = block or DEFAULT_BLOCK
    target, source = clustered_features(num, num), clustered_features(num + 1, num_source)
    options = dict(k1=k1, k2=k2, lambda_value=lambda_value)
    split = re_ranking(source, target, sparse=True, distributed=True, **options)
    split_dense = re_ranking(source, target, distributed=True, **options)
    if dist.get_rank() != 0:
        return {"split": split, "split_dense": split_dense}
    alone = re_ranking(source, target, sparse=True, **options)
    eps = compute_eps(alone, rho=0.05)
    return {"alone": alone, "split": split, "alone_dense": re_ranking(source, target, **options),
            "split_dense": split_dense, "eps": (eps, compute_eps(split, rho=0.05)),
            "labels": (cluster_labels(alone, eps, 3), cluster_labels(split, eps, 3))}


def compare_query_gallery(name, block, num_query, num_gallery):
    """Every rank: the single process's and the split re-ranking, with the caller's distances and without, and
    the re-ranked evaluation's metrics."""
    rerank._BLOCK_ELEMENTS = block or DEFAULT_BLOCK
    features = clustered_features(20, num_query + num_gallery, width=24)
    query, gallery = features[:num_query], features[num_query:]
    squared = squared_distances(query, gallery).astype(np.float32)
    given_alone, given_split = squared.copy(), squared.copy()
    re_ranking_query_gallery(query, gallery, k1=7, k2=3, distances=given_alone)
    re_ranking_query_gallery(query, gallery, k1=7, k2=3, distances=given_split, distributed=True)
    ids = np.random.default_rng(5).integers(0, 8, num_query + num_gallery)
    items = [(f"{i}.jpg", int(pid), i % 2) for i, pid in enumerate(ids)]
    tensors = torch.from_numpy(query), torch.from_numpy(gallery)
    metrics = [evaluate_features(*tensors, items[:num_query], items[num_query:], rerank=True, distributed=split)[0]
               for split in (False, True)]
    return {"given": (given_alone, given_split), "changed": float(np.abs(given_alone - squared).max()),
            "metrics": metrics,
            "computed": (re_ranking_query_gallery(query, gallery), re_ranking_query_gallery(query, gallery,
                                                                                            distributed=True))}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Both groups of processes, started at once (torch's import dominates): ``together`` (three ranks: the
    comparisons, then waits for rank 0 longer than the timeout, then a rank 0 that raises) and ``killed`` (two
    ranks: a collective that times out, then a rank 0 killed in its work alone). Per group: each rank's exit code,
    record (None when it left none) and stderr."""
    context = multiprocessing.get_context("fork")  # the children inherit the imports (seconds each under load)
    groups = {}
    for scenario, size in (("together", WORLD_SIZE), ("killed", 2)):
        folder = tmp_path_factory.mktemp(scenario)
        groups[scenario] = folder, [context.Process(target=worker, args=(rank, size, str(folder), scenario))
                                    for rank in range(size)]
        for process in groups[scenario][1]:
            process.start()
    results = {}
    for scenario, (folder, processes) in groups.items():
        for process in processes:
            process.join(timeout=300)  # only proves that nothing hangs
            assert process.exitcode is not None, f"{scenario}: a rank still waits"
        records = [torch.load(folder / f"rank{rank}.pt", weights_only=False)
                   if (folder / f"rank{rank}.pt").exists() else None for rank in range(len(processes))]
        stderr = [(folder / f"stderr{rank}").read_text() for rank in range(len(processes))]
        results[scenario] = [process.exitcode for process in processes], records, stderr
    return results


def worker(rank, size, folder, scenario):
    torch.set_num_threads(1)
    os.environ.update(WORLD_SIZE=str(size), RANK=str(rank))  # run_main's one-line errors name the rank
    sys.stderr = open(f"{folder}/stderr{rank}", "w")  # noqa: SIM115 (the process's own, closed at its exit)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=size,
                            timeout=timedelta(seconds=120))
    record = {}
    if scenario == "together":
        record["self"] = {case[0]: compare_self(*case) for case in SELF_CASES}
        record["query_gallery"] = {case[0]: compare_query_gallery(*case) for case in QUERY_GALLERY_CASES}
    dist.set_timeout(timedelta(seconds=DIST_TIMEOUT))
    runtime = Runtime(torch.device("cpu"), rank=rank, world_size=size, dist_timeout=DIST_TIMEOUT)
    if rank == 0:
        start_heartbeat(DIST_TIMEOUT)
    record["status"] = run_main(lambda argv: (wait_for_rank0 if scenario == "together" else lose_rank0)(
        runtime, record), [])
    torch.save(record, f"{folder}/rank{rank}.pt")


def work_alone(value=None):
    time.sleep(WORK_SECONDS)
    return value


def wait_for_rank0(runtime, record):
    """Rank 0 works alone before a share, a barrier and a gather, longer than the timeout each time; at last it
    stops on a bad option in its work alone."""
    record["share"] = runtime.share(lambda: work_alone(42))
    if runtime.is_main:
        work_alone()
    runtime.barrier()
    record["barrier"] = True
    if runtime.is_main:
        work_alone()
    record["gather"] = runtime.gather(runtime.rank * 10)
    runtime.share(stop)


def stop():
    raise UserError("--rho selects nothing")


def lose_rank0(runtime, record):
    """A plain collective still gives up after the timeout; then rank 0 is killed in its work alone."""
    try:
        if runtime.is_main:
            work_alone()
        dist.barrier()
    except RuntimeError as error:
        record["barrier"] = str(error)
    start = time.monotonic()
    try:
        runtime.share(lambda: os.kill(os.getpid(), signal.SIGKILL))
    finally:
        record["waited"] = time.monotonic() - start


def assert_same_csr(actual, expected):
    for field in ("indptr", "indices", "data"):
        np.testing.assert_array_equal(getattr(actual, field), getattr(expected, field))
    assert actual.data.dtype == expected.data.dtype == np.float32


@pytest.mark.parametrize("case", [case[0] for case in SELF_CASES])
def test_split_distance_equals_one_process_bit_for_bit(runs, case):
    _, records, _ = runs["together"]
    main = records[0]["self"][case]
    assert_same_csr(main["split"], main["alone"])
    np.testing.assert_array_equal(main["split_dense"], main["alone_dense"])
    assert main["eps"][0] == main["eps"][1]
    np.testing.assert_array_equal(*main["labels"])
    assert len(set(main["labels"][0])) > 3  # several clusters, not one blob
    for other in records[1:]:
        assert other["self"][case]["split"] is None and other["self"][case]["split_dense"] is None


@pytest.mark.parametrize("case", [case[0] for case in QUERY_GALLERY_CASES])
def test_split_query_gallery_re_ranking_equals_one_process_on_every_rank(runs, case):
    _, records, _ = runs["together"]
    for record in records:
        entry = record["query_gallery"][case]
        np.testing.assert_array_equal(*entry["given"])
        np.testing.assert_array_equal(*entry["computed"])
        alone, split = entry["metrics"]
        assert alone == split and "mAP_rerank" in split
        assert entry["changed"] > 0.1  # the distances given were re-ranked, not left as they came


def test_block_shares_follow_the_rows_in_rank_order_and_balance_the_cost():
    split = rerank._Split(False)
    split.size = 3
    chunks = [(0, 10), (10, 20), (20, 30), (30, 40), (40, 50), (50, 60)]
    costs = [40, 20, 20, 15, 15, 10]  # as an upper triangle's: the first blocks cost the most
    assert split.owners(costs).tolist() == [0, 1, 1, 2, 2, 2]  # 40 each
    assert split.bounds(chunks, costs) == [0, 10, 30, 60]
    split.rank = 1
    assert split.mine(chunks, costs) == [(10, 20), (20, 30)]
    assert split.bounds(chunks[:1]) == [0, 0, 10, 10]  # ranks left without a block own no rows


def test_ranks_wait_for_rank_0_working_alone_longer_than_the_timeout(runs):
    exit_codes, records, stderr = runs["together"]
    assert exit_codes == [0] * WORLD_SIZE  # the processes record run_main's status instead of exiting with it
    for rank, record in enumerate(records):
        assert record["share"] == 42 and record["barrier"]
        assert record["gather"] == ([0, 10, 20] if rank == 0 else [])


def test_a_rank_0_that_stops_ends_the_others_wait(runs):
    _, records, stderr = runs["together"]
    assert [record["status"] for record in records] == [2] + [1] * (WORLD_SIZE - 1)
    assert stderr[0].splitlines() == ["error: rank 0: --rho selects nothing"]
    for rank in range(1, WORLD_SIZE):
        assert stderr[rank].splitlines() == [f"error: rank {rank}: lost the other ranks (rank 0 ended its run): "
                                             "another rank died, raised or did not answer within --dist-timeout; "
                                             "the last saved checkpoint is kept"]


def test_a_killed_rank_0_is_reported_once_its_heartbeat_stands_still(runs):
    exit_codes, (killed, waiting), (_, stderr) = runs["killed"]
    assert exit_codes[0] == -signal.SIGKILL and killed is None
    assert re.search("timed out|timeout", waiting["barrier"], re.IGNORECASE)  # the plain collective's limit holds
    assert waiting["status"] == 1
    assert stderr.splitlines() == ["error: rank 1: lost the other ranks (rank 0 gave no sign of life for 1 s): "
                                   "another rank died, raised or did not answer within --dist-timeout; the last "
                                   "saved checkpoint is kept"]
    assert waiting["waited"] >= DIST_TIMEOUT  # the heartbeat stood still that long before rank 1 gave up
