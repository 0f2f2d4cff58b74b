"""Speed and memory of SSG's grouping step (ICCV 2019; docs/algorithm.md, grouping steps 2-4) at dataset scale.

Clustered random 2048-d unit features (fixed seeds) stand in for one feature type at Market-1501 scale
(N = 12,936 target images, M = 16,522 source images, DukeMTMC-reID as source) and MSMT17 scale
(N = 32,621, M = 16,522). For each scale it prints the time of the two matrix products alone (target Gram
N x N and target-source N x M, chunked: the floor of any exact method), of ``re_ranking(sparse=True)`` and of
eps + DBSCAN, with the peak resident memory of each; then, at N = 4,000 (Market's images per identity and
source), the time of the slow dense reference of the tests against the fast path. Every step runs in a
fresh process, so its peak RSS is its own.

Run from the repository root::

    python -m benchmarks.grouping --scale market --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse
import torch

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
    parser.add_argument("--step", choices=["rerank", "dbscan", "reference"], help=argparse.SUPPRESS)
    parser.add_argument("--workdir", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
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
