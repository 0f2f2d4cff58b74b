"""SSG++ (clustering-guided semi-supervised training): the labelled set and label propagation (spec section 5).

One target image per global cluster is labelled by a person (here: its ground-truth identity), drawn once
with seed 0 and stored so that reruns reuse it; every later iteration propagates those labels to the rest of
the target by nearest labelled neighbour under the k-reciprocal distance, keeping the most confident.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from reid.rerank import re_ranking_query_gallery
from reid.utils.data.preprocessor import Item
from reid.utils.errors import UserError
from reid.utils.logging import read_json, write_json

SAMPLE_METHODS = ("cluster", "random")


def draw_labelled_set(global_labels: np.ndarray, method: str = "cluster", seed: int = 0) -> np.ndarray:
    """Indices of the images to label, sorted.

    ``cluster``: one uniformly drawn member of every global cluster (outliers, label -1, are never drawn);
    ``random``: as many images drawn uniformly, without replacement, from all of them.
    """
    rng = np.random.RandomState(seed)
    clusters = np.unique(global_labels[global_labels >= 0])
    if method == "cluster":
        chosen = [rng.choice(np.flatnonzero(global_labels == c)) for c in clusters]
    elif method == "random":
        chosen = rng.choice(len(global_labels), size=len(clusters), replace=False)
    else:
        raise UserError(f"--sample {method}: expected one of {', '.join(SAMPLE_METHODS)}")
    return np.sort(np.asarray(chosen, dtype=np.int64))


def load_or_draw_labelled_set(fpath: str, items: Sequence[Item], global_labels: np.ndarray,
                              method: str) -> np.ndarray:
    """The stored labelled set when ``fpath`` exists (checked against ``items``), else a new draw saved
    there as JSON (indices and file names)."""
    if os.path.exists(fpath):
        stored = read_json(fpath)
        indices = np.asarray(stored["indices"], dtype=np.int64)
        if stored.get("method") != method or any(items[i][0] != f for i, f in zip(indices, stored["fnames"])):
            raise UserError(f"{fpath}: this labelled set was drawn for another target or --sample; move it away "
                            "to draw a new one")
        return indices
    indices = draw_labelled_set(global_labels, method)
    os.makedirs(os.path.dirname(os.path.abspath(fpath)), exist_ok=True)
    write_json(fpath, {"method": method, "seed": 0, "indices": indices.tolist(),
                       "fnames": [items[i][0] for i in indices]})
    return indices


def num_selected(iteration: int, num_unlabelled: int, iterations: int = 30) -> int:
    """How many propagated labels join at ``iteration``: ``min((iteration + 1) * (|U| // iterations), |U|)``
    (``iterations`` = 30 in the paper's setting)."""
    return min((iteration + 1) * (num_unlabelled // iterations), num_unlabelled)


@dataclass
class Propagation:
    """Propagated labels for the unlabelled images, sorted from the most confident."""

    indices: np.ndarray   # into the target training list
    labels: np.ndarray    # identity copied from the nearest labelled image
    distances: np.ndarray


def propagate_labels(features: torch.Tensor, labelled: np.ndarray, labelled_ids: np.ndarray, k1: int = 20,
                     k2: int = 6, lambda_value: float = 0.3) -> Propagation:
    """Every image outside ``labelled`` takes the identity of its nearest labelled image under the
    k-reciprocal distance (on L2-normalised evaluation ``features``), most confident first."""
    unlabelled = np.setdiff1d(np.arange(len(features)), labelled)
    distance = re_ranking_query_gallery(features[unlabelled], features[labelled], k1=k1, k2=k2,
                                        lambda_value=lambda_value)
    nearest = distance.argmin(axis=1)
    closest = distance[np.arange(len(unlabelled)), nearest]
    order = np.argsort(closest, kind="stable")
    return Propagation(unlabelled[order], np.asarray(labelled_ids)[nearest[order]], closest[order])
