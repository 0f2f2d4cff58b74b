"""Speed and memory of SSG's grouping step (ICCV 2019; docs/algorithm.md, grouping steps 2-4) at dataset scale.

Clustered random 2048-d unit features (fixed seeds) stand in for one feature type at Market-1501 scale
(N = 12,936 target images, M = 16,522 source images, DukeMTMC-reID as source) and MSMT17 scale
(N = 32,621, M = 16,522). For each scale it prints the time of the two matrix products alone (target Gram
N x N and target-source N x M, chunked: the floor of any exact method), of ``re_ranking(sparse=True)`` and of
eps + DBSCAN, with the peak resident memory of each; then, at N = 4,000 (Market's images per identity and
source), the time of the slow dense reference of the tests against the fast path. Every step runs in a
fresh process, so its peak RSS is its own.

``--split N ...`` times instead the whole grouping of one feature type (distance, eps, DBSCAN) of N targets
(Market's images per identity, the same source) in one process and in ``--processes`` gloo processes of one
thread each, the distance split across them (``re_ranking(distributed=True)``) and rank 0 clustering: each rank's
seconds from the common start to the end of its work (and its CPU seconds, which other work on the machine
disturbs less), its peak memory, whether the distance and the labels are identical, and the ratios.

Run from the repository root::

    python -m benchmarks.grouping --scale market --threads 2
    python -m benchmarks.grouping --split 25000 50000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse
import torch
import torch.distributed as dist

from reid.cluster import cluster_labels, compute_eps, count_clusters
from reid.rerank import re_ranking

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 2048
SOURCE_IMAGES, SOURCE_IDS = 16_522, 702
SCALES = {"market": (12_936, 751), "msmt": (32_621, 1_041)}
TARGETS = {"market": (15.0, 1.5), "msmt": (90.0, 4.0)}  # seconds and GB on 2 CPU cores
REFERENCE_IMAGES = 4_000
CHUNK_ROWS = 1024


def clustered_unit_features(num: int, num_centres: int, seed: int, noise: float = 0.8) -> torch.Tensor:
    """Unit rows around random unit centres (cosine about 0.6 within a centre, 0 across), float32."""
    generator = torch.Generator().manual_seed(seed)
    centres = torch.nn.functional.normalize(torch.randn(num_centres, WIDTH, generator=generator), dim=1)
    owner = torch.randint(0, num_centres, (num,), generator=generator)
    features = torch.empty(num, WIDTH)
    for start in range(0, num, CHUNK_ROWS):  # never a float64 or N-wide temporary
        stop = min(start + CHUNK_ROWS, num)
        noise_rows = torch.nn.functional.normalize(torch.randn(stop - start, WIDTH, generator=generator), dim=1)
        features[start:stop] = torch.nn.functional.normalize(centres[owner[start:stop]] + noise * noise_rows, dim=1)
    return features


def scale_features(scale: str) -> tuple[torch.Tensor, torch.Tensor]:
    num, num_ids = SCALES[scale]
    return clustered_unit_features(SOURCE_IMAGES, SOURCE_IDS, seed=1), clustered_unit_features(num, num_ids, seed=2)


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kilobytes on Linux


def current_rss_gb() -> float:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def timed(run):
    start = time.perf_counter()
    result = run()
    return result, time.perf_counter() - start


def matrix_product_floor(source: torch.Tensor, target: torch.Tensor) -> float:
    """Seconds of the chunked target Gram (N x N) and target-source (N x M) products, results dropped."""
    start = time.perf_counter()
    for first in range(0, len(target), CHUNK_ROWS):
        rows = target[first:first + CHUNK_ROWS]
        (rows @ target.T).amax(dim=1)
        (rows @ source.T).amax(dim=1)
    return time.perf_counter() - start


def step_rerank(scale: str, workdir: Path) -> dict:
    source, target = scale_features(scale)
    before = current_rss_gb()
    floor = matrix_product_floor(source, target)
    distance, seconds = timed(lambda: re_ranking(source, target, sparse=True))
    scipy.sparse.save_npz(workdir / f"{scale}.npz", distance)
    return {"floor_s": floor, "seconds": seconds, "peak_gb": peak_rss_gb(), "before_gb": before,
            "stored_per_row": distance.nnz / distance.shape[0]}


def step_dbscan(scale: str, workdir: Path) -> dict:
    distance = scipy.sparse.load_npz(workdir / f"{scale}.npz")
    before = current_rss_gb()
    start = time.perf_counter()
    eps = compute_eps(distance)
    labels = cluster_labels(distance, eps)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "peak_gb": peak_rss_gb(), "before_gb": before, "eps": eps,
            "clusters": count_clusters(labels), "outliers": int((labels == -1).sum())}


def step_reference() -> dict:
    from tests.rerank_reference import source_aware_distance

    num, num_ids = SCALES["market"]
    source = clustered_unit_features(SOURCE_IMAGES, SOURCE_IDS, seed=1)
    target = clustered_unit_features(REFERENCE_IMAGES, round(REFERENCE_IMAGES * num_ids / num), seed=3)
    fast, fast_seconds = timed(lambda: re_ranking(source, target, sparse=True))
    slow, slow_seconds = timed(lambda: source_aware_distance(source.numpy(), target.numpy()))
    entries = fast.tocoo()
    omitted = np.ones(slow.shape, dtype=bool)
    omitted[entries.row, entries.col] = False
    return {"fast_s": fast_seconds, "slow_s": slow_seconds,
            "max_diff": float(np.abs(entries.data - slow[entries.row, entries.col]).max()),
            "omitted_min": float(slow[omitted].min()) if omitted.any() else None}


def run_step(step: str, scale: str, threads: int, workdir: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    command = [sys.executable, "-m", "benchmarks.grouping", "--step", step, "--scale", scale,
               "--threads", str(threads), "--workdir", str(workdir)]
    finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise SystemExit(f"step {step} ({scale}) failed:\n{finished.stderr}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def report_scale(scale: str, threads: int, workdir: Path) -> None:
    num, _ = SCALES[scale]
    target_s, target_gb = TARGETS[scale]
    rerank = run_step("rerank", scale, threads, workdir)
    dbscan = run_step("dbscan", scale, threads, workdir)
    total = rerank["seconds"] + dbscan["seconds"]
    print(f"\n{scale}: N = {num:,} target, M = {SOURCE_IMAGES:,} source, {WIDTH}-d, one feature type")
    print(f"  matrix products alone (N x N + N x M): {rerank['floor_s']:7.1f} s   (the floor)")
    print(f"  re_ranking(sparse=True):               {rerank['seconds']:7.1f} s   "
          f"= {rerank['seconds'] / rerank['floor_s']:.2f} x floor; peak RSS {rerank['peak_gb']:.2f} GB "
          f"({rerank['before_gb']:.2f} GB held before: interpreter, torch, features); "
          f"{rerank['stored_per_row']:.0f} stored entries per row")
    print(f"  compute_eps + DBSCAN:                  {dbscan['seconds']:7.1f} s   peak RSS "
          f"{dbscan['peak_gb']:.2f} GB ({dbscan['before_gb']:.2f} GB before); eps {dbscan['eps']:.4f}, "
          f"{dbscan['clusters']} clusters, {dbscan['outliers']} outliers")
    peak = max(rerank["peak_gb"], dbscan["peak_gb"])
    print(f"  grouping total:                        {total:7.1f} s   (target <= {target_s:.0f} s: "
          f"{'met' if total <= target_s else 'MISSED'}); peak {peak:.2f} GB (target <= {target_gb} GB: "
          f"{'met' if peak <= target_gb else 'MISSED'})")


def split_features(num: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The source, and ``num`` targets with Market's images per identity."""
    num_ids = round(num * SCALES["market"][1] / SCALES["market"][0])
    return clustered_unit_features(SOURCE_IMAGES, SOURCE_IDS, seed=1), clustered_unit_features(num, num_ids, seed=2)


def digest(*arrays: np.ndarray) -> str:
    content = hashlib.sha1()
    for array in arrays:
        content.update(np.ascontiguousarray(array).tobytes())
    return content.hexdigest()[:12]


def step_split(num: int, rank: int, processes: int, port: int) -> dict:
    """One process of the split grouping: its seconds from the common start to the end of its distance share and,
    on rank 0, of eps + DBSCAN; with one process, the single-process path (no process group at all)."""
    source, target = split_features(num)
    before = current_rss_gb()
    if processes > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=processes)
        dist.barrier()  # the common start
    start, cpu_start = time.perf_counter(), time.process_time()
    distance = re_ranking(source, target, sparse=True, distributed=processes > 1)
    result = {"rank": rank, "distance_s": time.perf_counter() - start, "peak_gb": peak_rss_gb(), "before_gb": before}
    if rank == 0:
        clustering = time.perf_counter()
        eps = compute_eps(distance)
        labels = cluster_labels(distance, eps)
        result.update(dbscan_s=time.perf_counter() - clustering, eps=eps, clusters=count_clusters(labels),
                      labels=digest(labels), distance=digest(distance.indptr, distance.indices, distance.data),
                      stored_per_row=distance.nnz / num, peak_gb=peak_rss_gb())
    result.update(grouping_s=time.perf_counter() - start, cpu_s=time.process_time() - cpu_start)
    if processes > 1:
        dist.destroy_process_group()
    return result


def run_split(num: int, processes: int) -> list[dict]:
    """Every rank's figures, each rank a fresh process of one thread."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    commands = [[sys.executable, "-m", "benchmarks.grouping", "--step", "split", "--threads", "1", "--split", str(num),
                 "--rank", str(rank), "--processes", str(processes), "--port", str(port)] for rank in range(processes)]
    ranks = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for command in commands]
    outputs = [rank.communicate() for rank in ranks]
    for rank, (_, stderr) in zip(ranks, outputs):
        if rank.returncode != 0:
            raise SystemExit(f"split grouping of {num} targets in {processes} processes failed:\n{stderr}")
    return [json.loads(stdout.strip().splitlines()[-1]) for stdout, _ in outputs]


def report_split(num: int, processes: int) -> None:
    (alone,), ranks = run_split(num, 1), run_split(num, processes)
    main = ranks[0]
    print(f"\nN = {num:,} target ({round(num * SCALES['market'][1] / SCALES['market'][0])} identities), "
          f"M = {SOURCE_IMAGES:,} source, {WIDTH}-d, one feature type, one thread per process; "
          f"{alone['stored_per_row']:.0f} stored entries per row, eps {alone['eps']:.4f}, {alone['clusters']} clusters")
    print(f"  {'':24}{'distance':>10}{'eps + DBSCAN':>14}{'grouping':>10}{'of 1 process':>14}{'CPU':>9}"
          f"{'peak RSS':>10}{'held before':>13}")
    rows = [("1 process", alone)] + [(f"{processes} processes, rank {r['rank']}", r) for r in ranks]
    for name, row in rows:
        dbscan = f"{row['dbscan_s']:.1f} s" if "dbscan_s" in row else "-"
        print(f"  {name:24}{row['distance_s']:8.1f} s{dbscan:>14}{row['grouping_s']:8.1f} s"
              f"{row['grouping_s'] / alone['grouping_s']:13.2f}x{row['cpu_s']:7.1f} s{row['peak_gb']:7.2f} GB"
              f"{row['before_gb']:10.2f} GB")
    slowest = max(row["grouping_s"] for row in ranks)
    print(f"  distance identical bit for bit: {'yes' if main['distance'] == alone['distance'] else 'NO'}; "
          f"eps identical: {'yes' if main['eps'] == alone['eps'] else 'NO'}; labels identical: "
          f"{'yes' if main['labels'] == alone['labels'] else 'NO'}")
    print(f"  speed-up of the grouping: {alone['grouping_s'] / slowest:.2f}x (1 process over the slowest rank; "
          f"each rank <= 0.6x of 1 process: {'met' if slowest <= 0.6 * alone['grouping_s'] else 'MISSED'})")


def report_reference(threads: int, workdir: Path) -> None:
    result = run_step("reference", "market", threads, workdir)
    print(f"\nslow dense reference at N = {REFERENCE_IMAGES:,} (M = {SOURCE_IMAGES:,}): {result['slow_s']:.1f} s; "
          f"re_ranking(sparse=True): {result['fast_s']:.2f} s; ratio {result['slow_s'] / result['fast_s']:.1f} x; "
          f"max |difference| at stored entries {result['max_diff']:.1e}; smallest omitted reference value "
          f"{result['omitted_min']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", choices=["market", "msmt", "all"], default="market")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--split", type=int, nargs="+", metavar="N",
                        help="time the grouping of N targets in 1 process and split across --processes, one thread "
                             "each (instead of --scale)")
    parser.add_argument("--processes", type=int, default=2, help="gloo processes of --split (default 2)")
    parser.add_argument("--step", choices=["rerank", "dbscan", "reference", "split"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.step == "split":
        print(json.dumps(step_split(args.split[0], args.rank, args.processes, args.port)))
        return
    if args.split:
        print(f"load average at start {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (other work on the machine "
              "slows every figure)")
        for num in args.split:
            report_split(num, args.processes)
        return
    if args.step:
        steps = {"rerank": lambda: step_rerank(args.scale, args.workdir),
                 "dbscan": lambda: step_dbscan(args.scale, args.workdir),
                 "reference": step_reference}
        print(json.dumps(steps[args.step]()))
        return
    print(f"{args.threads} torch threads; load average at start {os.getloadavg()[0]:.1f} "
          f"on {os.cpu_count()} CPUs (other work on the machine slows every figure)")
    with tempfile.TemporaryDirectory() as workdir:
        for scale in (["market", "msmt"] if args.scale == "all" else [args.scale]):
            report_scale(scale, args.threads, Path(workdir))
        report_reference(args.threads, Path(workdir))


if __name__ == "__main__":
    main()
