"""Benchmark of the re-ID evaluation metrics (docs/algorithm.md, "Evaluation protocol"): mAP + CMC at
Market-1501 and MSMT17 size.

Times ``reid.evaluation_metrics`` (best of 3) against a plain per-query reference written from the protocol (one
stable argsort per query, run once) on random float32 distances with Market-1501's shape (3,368 queries,
15,913 gallery images, 751 identities plus distractors, 6 cameras), and checks that mAP and CMC top-1/5/10
agree. ``--msmt`` also times MSMT17's shape (11,659 x 82,161, a 3.8 GB distance matrix) and reports the peak
resident memory, to be read against the 8 GB budget.

``--msmt-rerank`` times the whole ``--rerank`` evaluation at MSMT17's test size (11,659 x 82,161 features of
6144 dimensions, ResNet-50 with two stripes; about 20 minutes on 2 cores): query x gallery distances, mAP + CMC,
k-reciprocal re-ranking over query + gallery, mAP + CMC again, exactly as ``reid.evaluators.evaluate_features``
does; then the matrix products that any exact re-ranking must compute (query x gallery, and the upper halves
of query x query and gallery x gallery: 5.4e13 flops), alone, in the same blocks. It prints the ratio of the two
(target <= 1.3) and the peak memory (target <= 8 GB). The features are synthetic: identities drawn in a
64-d latent space, embedded in 6144-d, so that neighbourhoods overlap as in a real test set.
``--scale`` shrinks both sets (for a quick look), ``--device cuda`` runs it on a GPU.

Run from the repository root: ``python -m benchmarks.evaluation [--threads 2] [--msmt] [--msmt-rerank]``.
"""

from __future__ import annotations

import argparse
import resource
import time

import numpy as np
import torch
import torch.nn.functional as F

import reid.evaluators
from reid.evaluation_metrics import cmc, mean_ap
from reid.evaluators import evaluate_features
from reid.rerank import _rows_per_block

MARKET = dict(name="Market-1501", n_queries=3368, n_gallery=15913, n_ids=751, n_cams=6)
MSMT = dict(name="MSMT17", n_queries=11659, n_gallery=82161, n_ids=3060, n_cams=15)
MSMT_FEATURE_WIDTH = 6144  # ResNet-50, global + 2 stripes
RERANK_TARGET_RATIO = 1.3
LATENT_WIDTH, LATENT_SPREAD = 64, 1.2
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
    """mAP and CMC one query at a time, straight from the protocol."""
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


def synthetic_features(ids: np.ndarray, centres: torch.Tensor, embedding: torch.Tensor, rng: np.random.Generator,
                       device: torch.device, chunk: int = 8192) -> torch.Tensor:
    """Unit rows ``normalise((centre_id + spread * noise) @ embedding)``, built a chunk at a time in float32."""
    features = torch.empty(len(ids), embedding.shape[1], device=device)
    for start in range(0, len(ids), chunk):
        part = ids[start:start + chunk]
        noise = torch.from_numpy(rng.standard_normal((len(part), centres.shape[1]), dtype=np.float32))
        latent = (centres[torch.from_numpy(part)] + LATENT_SPREAD * noise).to(device)
        features[start:start + len(part)] = F.normalize(latent @ embedding, dim=1)
    return features


def msmt_sized_problem(scale: float, device: torch.device, seed: int = 0) -> tuple:
    """Query and gallery features and items (fname, pid, camid) of MSMT17's test size times ``scale``."""
    rng = np.random.default_rng(seed)
    n_queries, n_gallery = round(MSMT["n_queries"] * scale), round(MSMT["n_gallery"] * scale)
    n_ids = max(2, round(MSMT["n_ids"] * scale))
    centres = torch.from_numpy(rng.standard_normal((n_ids, LATENT_WIDTH), dtype=np.float32))
    embedding = torch.from_numpy(rng.standard_normal((LATENT_WIDTH, MSMT_FEATURE_WIDTH), dtype=np.float32))
    embedding = embedding.to(device)
    sets = []
    for count in (n_queries, n_gallery):
        ids = np.sort(rng.integers(0, n_ids, count))  # as on disk: the images of one identity together
        cams = rng.integers(0, MSMT["n_cams"], count)
        items = [(f"{i}.jpg", int(pid), int(cam)) for i, (pid, cam) in enumerate(zip(ids, cams))]
        sets.append((synthetic_features(ids, centres, embedding, rng, device), items))
    return sets[0], sets[1]


def synchronised_seconds(device: torch.device, start: float) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def union_products(query: torch.Tensor, gallery: torch.Tensor) -> None:
    """The Gram blocks an exact re-ranking computes, alone: query x gallery once, and the upper halves of query x
    query and gallery x gallery, in the row blocks of ``reid.rerank``."""
    step = _rows_per_block(len(query) + len(gallery))
    for first in range(0, len(query), step):
        query[first:first + step] @ query[first:].T
        query[first:first + step] @ gallery.T
    for first in range(0, len(gallery), step):
        gallery[first:first + step] @ gallery[first:].T


def timed(function, device: torch.device) -> tuple[float, float]:
    """Wall-clock and CPU seconds of ``function()`` (CPU time is what a shared machine's load leaves intact)."""
    wall, cpu = time.perf_counter(), time.process_time()
    function()
    return synchronised_seconds(device, wall), time.process_time() - cpu


def time_msmt_rerank(threads: int, scale: float, device: torch.device) -> bool:
    (query, query_items), (gallery, gallery_items) = msmt_sized_problem(scale, device)
    flops = (len(query) + len(gallery)) ** 2 * query.shape[1]
    print(f"MSMT17 test size x {scale:g}: {len(query)} x {len(gallery)} features of {query.shape[1]} dimensions "
          f"on {device}, {threads} threads; the products are {flops:.2e} flops")
    rerank_seconds = []
    original = reid.evaluators.re_ranking_query_gallery

    def timed_rerank(*args, **kwargs):
        begin = time.perf_counter()
        result = original(*args, **kwargs)
        rerank_seconds.append(synchronised_seconds(device, begin))
        return result

    reid.evaluators.re_ranking_query_gallery = timed_rerank
    metrics = {}
    evaluation, evaluation_cpu = timed(lambda: metrics.update(
        evaluate_features(query, gallery, query_items, gallery_items, rerank=True)[0]), device)
    reid.evaluators.re_ranking_query_gallery = original
    peak_gib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    products, products_cpu = timed(lambda: union_products(query, gallery), device)
    ratio = evaluation / products
    print(f"  without re-ranking: mAP {metrics['mAP']:.1f}%, top-1 {metrics['top1']:.1f}%; "
          f"re-ranked: mAP {metrics['mAP_rerank']:.1f}%, top-1 {metrics['top1_rerank']:.1f}%")
    print(f"  evaluation with re-ranking: {evaluation:.1f} s ({evaluation_cpu:.0f} CPU s), of which "
          f"re_ranking_query_gallery {rerank_seconds[0]:.1f} s")
    print(f"  the matrix products alone:  {products:.1f} s ({products_cpu:.0f} CPU s)")
    print(f"  ratio: {ratio:.2f} wall-clock, {evaluation_cpu / products_cpu:.2f} CPU time "
          f"(target <= {RERANK_TARGET_RATIO})")
    print(f"  peak RSS of the process: {peak_gib:.2f} GiB (budget {MEMORY_BUDGET_GB} GB)")
    if device.type == "cuda":
        print(f"  peak GPU memory: {torch.cuda.max_memory_allocated(device) / 2**30:.2f} GiB")
    return ratio <= RERANK_TARGET_RATIO and peak_gib * 2**30 <= MEMORY_BUDGET_GB * 1e9


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    parser.add_argument("--msmt", action="store_true", help="also time the MSMT17 size (needs about 5 GB)")
    parser.add_argument("--msmt-rerank", action="store_true",
                        help="only time the --rerank evaluation at MSMT17 test size against its matrix products")
    parser.add_argument("--scale", type=float, default=1.0, help="--msmt-rerank: fraction of MSMT17's test size")
    parser.add_argument("--device", type=str, default="cpu", help="--msmt-rerank: where the features are")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.msmt_rerank:
        return 0 if time_msmt_rerank(args.threads, args.scale, torch.device(args.device)) else 1
    agree = compare_with_reference(args.threads)
    if args.msmt:
        time_msmt(args.threads)
    return 0 if agree else 1


if __name__ == "__main__":
    raise SystemExit(main())
