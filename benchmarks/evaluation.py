"""Benchmark of the re-ID evaluation metrics (SSG spec section 7): mAP + CMC at Market-1501 and MSMT17 size.

Times ``reid.evaluation_metrics`` (best of 3) against a plain per-query reference written from the spec (one
stable argsort per query, run once) on random float32 distances with Market-1501's shape (3,368 queries,
15,913 gallery images, 751 identities plus distractors, 6 cameras), and checks that mAP and CMC top-1/5/10
agree. ``--msmt`` also times MSMT17's shape (11,659 x 82,161, a 3.8 GB distance matrix) and reports the peak
resident memory, to be read against the 8 GB budget.

Run from the repository root: ``python -m benchmarks.evaluation [--threads 2] [--msmt]``.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch

from reid.evaluation_metrics import cmc, mean_ap

MARKET = dict(name="Market-1501", n_queries=3368, n_gallery=15913, n_ids=751, n_cams=6)
MSMT = dict(name="MSMT17", n_queries=11659, n_gallery=82161, n_ids=3060, n_cams=15)
TARGET_SECONDS = 1.5
MEMORY_BUDGET_GB = 8
REPORTED_RANKS = (1, 5, 10)
TOLERANCE = 1e-6


def random_problem(n_queries: int, n_gallery: int, n_ids: int, n_cams: int, seed: int = 0) -> tuple:
    """Random float32 distances with identities 1..n_ids (gallery identity 0: distractors) and cameras."""
    rng = np.random.default_rng(seed)
    distmat = np.empty((n_queries, n_gallery), dtype=np.float32)
    # Filled in place: no float64 copy of a matrix that reaches 3.8 GB at MSMT17 size.
    rng.random(dtype=np.float32, out=distmat)
    return (
        distmat,
        rng.integers(1, n_ids + 1, n_queries),
        rng.integers(0, n_ids + 1, n_gallery),
        rng.integers(0, n_cams, n_queries),
        rng.integers(0, n_cams, n_gallery),
    )


def evaluate(problem: tuple) -> tuple[float, np.ndarray]:
    return mean_ap(*problem), cmc(*problem, topk=max(REPORTED_RANKS))


def reference_evaluate(problem: tuple) -> tuple[float, np.ndarray]:
    """mAP and CMC one query at a time, straight from the spec."""
    distmat, query_ids, gallery_ids, query_cams, gallery_cams = problem
    precisions, first_ranks = [], []
    for query, distances in enumerate(distmat):
        order = np.argsort(distances, kind="stable")
        is_match = gallery_ids[order] == query_ids[query]
        keep = ~(is_match & (gallery_cams[order] == query_cams[query]))
        ranked, is_match = distances[order][keep], is_match[keep]
        if not is_match.any():
            continue
        # Ties form one threshold: an item's precision counts everything at or below its distance.
        at_or_below = np.searchsorted(ranked, ranked, side="right")
        true_at_or_below = np.cumsum(is_match)[at_or_below - 1]
        precisions.append(np.mean(true_at_or_below[is_match] / at_or_below[is_match]))
        first_ranks.append(np.argmax(is_match))
    hits = np.bincount(first_ranks, minlength=max(REPORTED_RANKS))[: max(REPORTED_RANKS)]
    return float(np.mean(precisions)), np.cumsum(hits) / len(first_ranks)


def best_time(function, problem: tuple, repeats: int) -> tuple[float, tuple]:
    best, result = np.inf, None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function(problem)
        best = min(best, time.perf_counter() - start)
    return best, result


def describe(mean_average_precision: float, curve: np.ndarray) -> str:
    ranks = ", ".join(f"top-{k} {curve[k - 1]:.6f}" for k in REPORTED_RANKS)
    return f"mAP {mean_average_precision:.6f}, {ranks}"


def compare_with_reference(threads: int) -> bool:
    problem = random_problem(**{key: value for key, value in MARKET.items() if key != "name"})
    print(f"{MARKET['name']} size: {MARKET['n_queries']} x {MARKET['n_gallery']}, {threads} threads")
    fast_seconds, (fast_map, fast_cmc) = best_time(evaluate, problem, repeats=3)
    print(
        f"  reid.evaluation_metrics mAP + CMC: {fast_seconds:.3f} s (best of 3); "
        f"target <= {TARGET_SECONDS} s on 2 cores"
    )
    reference_seconds, (reference_map, reference_cmc) = best_time(reference_evaluate, problem, repeats=1)
    print(f"  per-query reference:               {reference_seconds:.3f} s (once)")
    print(f"  speed-up: {reference_seconds / fast_seconds:.1f}x")
    agreements = {"mAP": abs(fast_map - reference_map) <= TOLERANCE}
    for k in REPORTED_RANKS:
        agreements[f"top-{k}"] = abs(fast_cmc[k - 1] - reference_cmc[k - 1]) <= TOLERANCE
    print(f"  project:   {describe(fast_map, fast_cmc)}")
    print(f"  reference: {describe(reference_map, reference_cmc)}")
    print(
        "  agree to 1e-6: " + ", ".join(f"{name} {'yes' if ok else 'NO'}" for name, ok in agreements.items())
    )
    return all(agreements.values())


def time_msmt(threads: int) -> None:
    problem = random_problem(**{key: value for key, value in MSMT.items() if key != "name"})
    print(
        f"{MSMT['name']} size: {MSMT['n_queries']} x {MSMT['n_gallery']} "
        f"({problem[0].nbytes / 2**30:.1f} GiB distances), {threads} threads"
    )
    seconds, (mean_average_precision, curve) = best_time(evaluate, problem, repeats=1)
    print(f"  reid.evaluation_metrics mAP + CMC: {seconds:.3f} s (once)")
    print(f"  {describe(mean_average_precision, curve)}")
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux
    print(f"  peak RSS of the process: {peak_gib:.2f} GiB (budget {MEMORY_BUDGET_GB} GB)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--msmt", action="store_true", help="also time the MSMT17 size (needs about 5 GB)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    agree = compare_with_reference(args.threads)
    if args.msmt:
        time_msmt(args.threads)
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
