"""SSG++ (clustering-guided semi-supervised training): the labelled set and label propagation
(docs/algorithm.md, "SSG++").

One target image per global cluster is labelled by a person (on a labelled target its ground-truth identity
plays that person; on one's own crops a person answers through :class:`reid.annotation.CsvLabeller`), drawn
once (with the release's seed 0 by default) and stored so that reruns reuse it; every later iteration
propagates those labels to the rest of the target by nearest labelled neighbour under the k-reciprocal
distance, keeping the most confident.
:class:`SemiSupervision` puts the pieces together: what SSG++'s labelled loader holds at each iteration.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from reid.annotation import AnnotationNeeded
from reid.feature_extraction import eval_features
from reid.rerank import re_ranking_query_gallery
from reid.utils.data.preprocessor import Item
from reid.utils.errors import UserError
from reid.utils.records import read_json, write_json

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
                              method: str, seed: int = 0) -> np.ndarray:
    """The stored labelled set when ``fpath`` exists (checked against ``items``, ``method`` and ``seed``), else a
    new draw with ``seed`` saved there as JSON (indices, file names, method and seed)."""
    if os.path.exists(fpath):
        stored = read_json(fpath)
        indices = np.asarray(stored["indices"], dtype=np.int64)
        if (stored.get("method") != method or stored.get("seed", 0) != seed
                or any(items[i][0] != f for i, f in zip(indices, stored["fnames"]))):
            raise UserError(f"{fpath}: this labelled set was drawn for another target, --sample or --label-seed; "
                            "move it away to draw a new one")
        return indices
    indices = draw_labelled_set(global_labels, method, seed)
    os.makedirs(os.path.dirname(os.path.abspath(fpath)), exist_ok=True)
    write_json(fpath, {"method": method, "seed": seed, "indices": indices.tolist(),
                       "fnames": [items[i][0] for i in indices]})
    return indices


def num_selected(iteration: int, num_unlabelled: int, iterations: int) -> int:
    """How many propagated labels join at ``iteration``: ``min((iteration + 1) * (|U| // iterations), |U|)``.

    ``iterations`` is the run's number of iterations (``--iteration``; 30 in the paper's setting): the
    released code divides by it, so the selection grows by 1/iterations of U per iteration and reaches all of U
    (less the remainder of the division) at the last one, whatever the run's length.
    """
    return min((iteration + 1) * (num_unlabelled // iterations), num_unlabelled)


@dataclass
class Propagation:
    """Propagated labels for the unlabelled images, sorted from the most confident."""

    indices: np.ndarray   # into the target training list
    labels: np.ndarray    # identity copied from the nearest labelled image
    distances: np.ndarray


def propagate_labels(features: torch.Tensor, labelled: np.ndarray, labelled_ids: np.ndarray,
                     distributed: bool = False, **rerank_options: float) -> Propagation:
    """Every image outside ``labelled`` takes the identity of its nearest labelled image under the
    k-reciprocal distance (on L2-normalised evaluation ``features``), most confident first. The distance is
    Zhong et al.'s re-ranking in its usual setting, as the release; ``rerank_options`` (k1, k2, lambda_value)
    change it. With ``distributed`` (every rank calls, with the same features) each rank re-ranks its share of
    the unlabelled images and every rank gets the whole result."""
    unlabelled = np.setdiff1d(np.arange(len(features)), labelled)
    distance = re_ranking_query_gallery(features[unlabelled], features[labelled], distributed=distributed,
                                        **rerank_options)
    nearest = distance.argmin(axis=1)
    closest = distance[np.arange(len(unlabelled)), nearest]
    order = np.argsort(closest, kind="stable")
    return Propagation(unlabelled[order], np.asarray(labelled_ids)[nearest[order]], closest[order])


@dataclass
class LabelledSelection:
    """The images of SSG++'s labelled loader at one iteration: the labelled set, then the propagated images."""

    indices: np.ndarray   # into the target training list
    labels: np.ndarray    # the annotated identity, then the propagated one
    num_labelled: int
    true_ids: np.ndarray | None  # ground truth of the same images, only to measure the propagated labels

    def summary(self) -> dict:
        """``labelled``, ``propagated`` and ``propagated_accuracy`` (percent; None when nothing propagated or
        there is no ground truth to measure against)."""
        num_propagated = len(self.labels) - self.num_labelled
        accuracy = None
        if num_propagated and self.true_ids is not None:
            propagated = slice(self.num_labelled, None)
            accuracy = 100 * float((self.labels[propagated] == self.true_ids[propagated]).mean())
        return {"labelled": self.num_labelled, "propagated": num_propagated, "propagated_accuracy": accuracy}


class SemiSupervision:
    """What SSG++ adds to SSG (docs/algorithm.md, "SSG++"): from ``label_iteration`` on, the labelled set and the
    most confident propagated labels, recomputed every iteration from the current features.

    Parameters
    ----------
    fpath : str
        Where the labelled set is stored (``labelled_set.json`` in the logs dir).
    items : sequence of Item
        The target training images; without ``labeller`` their pids play the person who labels the drawn images.
    sample : str
        ``cluster`` or ``random`` (:func:`draw_labelled_set`).
    label_iteration : int
        The iteration at which the labelled set is drawn (5 in the paper's setting).
    iterations : int
        The run's number of iterations, which sets the selection schedule (:func:`num_selected`).
    seed : int
        The draw's seed (the release reseeds with 0 there).
    share : callable or None
        Under DDP, :meth:`reid.utils.runtime.Runtime.share`: rank 0 alone loads or draws (and stores) the
        labelled set and labels it, and every rank trains on its answer, whatever file another machine holds.
    labeller : callable or None
        The labels of the drawn images (indices into ``items``) where a person gives them
        (:class:`reid.annotation.CsvLabeller`, for a target without identities); it may stop the run with
        :class:`reid.annotation.AnnotationNeeded`, raised then on every rank. The items' pids are then not
        ground truth, and the propagated labels are not measured. None: the pids label the drawn images.
    distributed : bool
        Under DDP: every rank takes a share of the propagation's re-ranking (:func:`propagate_labels`).
    """

    def __init__(self, fpath: str, items: Sequence[Item], sample: str, label_iteration: int, iterations: int,
                 seed: int = 0, share: Callable[[Callable[[], tuple]], tuple] | None = None,
                 labeller: Callable[[np.ndarray], np.ndarray] | None = None, distributed: bool = False):
        self.fpath = fpath
        self.distributed = distributed
        self.seed = seed
        self.share = share
        self.items = items
        self.labeller = labeller
        self.true_ids = None if labeller is not None else np.array([pid for _, pid, _ in items])
        self.sample = sample
        self.label_iteration = label_iteration
        self.iterations = iterations

    def select(self, iteration: int, global_labels: np.ndarray, pooled: torch.Tensor) -> LabelledSelection | None:
        """The labelled loader's images at ``iteration``, None before ``label_iteration``.

        ``global_labels`` are this iteration's global clusters (used by the draw only), ``pooled`` the target's
        pooled features (N, S+1, C); labels propagate on their evaluation feature.
        """
        if iteration < self.label_iteration:
            return None
        def load_or_draw() -> tuple[np.ndarray, np.ndarray | AnnotationNeeded]:
            labelled = load_or_draw_labelled_set(self.fpath, self.items, global_labels, self.sample, self.seed)
            try:
                return labelled, (self.labeller(labelled) if self.labeller else self.true_ids[labelled])
            except AnnotationNeeded as stop:  # sent to every rank, so that all of them stop, not rank 0 alone
                return labelled, stop

        labelled, labelled_ids = self.share(load_or_draw) if self.share else load_or_draw()
        if isinstance(labelled_ids, AnnotationNeeded):
            raise labelled_ids
        propagation = propagate_labels(eval_features(pooled), labelled, labelled_ids, self.distributed)
        n = num_selected(iteration, len(propagation.indices), self.iterations)
        indices = np.concatenate([labelled, propagation.indices[:n]])
        labels = np.concatenate([labelled_ids, propagation.labels[:n]])
        true_ids = None if self.true_ids is None else self.true_ids[indices]
        return LabelledSelection(indices, labels, len(labelled), true_ids)
