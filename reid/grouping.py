"""One iteration's grouping of the target (Fu et al., ICCV 2019; docs/algorithm.md, grouping steps 4-5): its
labels, the images kept for training, its figures, and the warning when it degenerates.

Per feature type: the number of clusters, the share of the target's images in a cluster, and the distribution
of cluster sizes; for all types together, the share kept for training (the images no type calls an outlier,
Fu et al., ICCV 2019). On one's own crops these figures are all there is to judge the grouping by.
:func:`grouping_warnings` reads them for the two ways a grouping fails: nearly every image an outlier (eps too
small for these features), or people merged into a few large clusters (eps too large).
"""
from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from reid.cluster import count_clusters, pair_scores, pseudo_labels
from reid.utils.errors import UserError

# Below this share of images kept (percent), most of the target is outliers: training sees little of it.
LOW_KEPT_PERCENT = 30.0
# Above this share of the images (percent) in one cluster, that cluster holds many people.
HIGH_LARGEST_PERCENT = 50.0
# Mean cluster size this many times the assumed images per person (or below its inverse): people merged
# (or cut into pieces). The rule's rho on synth_b gives 15.1 images per global cluster for 17.2 per person,
# a quarter of it 4.3 and twice it 90 (docs/demo-studies.md).
SIZE_FACTOR = 3.0


def size_bins(sizes: np.ndarray) -> dict[str, int]:
    """Cluster sizes counted in power-of-two bins (``"4-7"``, ``"8-15"``, ...), from the bin of the smallest to
    that of the largest, empty bins in between included; empty when there is no cluster."""
    if sizes.size == 0:
        return {}
    exponents = np.floor(np.log2(sizes)).astype(int)
    bins = {}
    for exponent in range(exponents.min(), exponents.max() + 1):
        low, high = 2 ** exponent, 2 ** (exponent + 1) - 1
        bins[str(low) if low == high else f"{low}-{high}"] = int((exponents == exponent).sum())
    return bins


def cluster_sizes(labels: np.ndarray) -> dict:
    """The size distribution of one feature type's clusters (outliers, -1, not counted).

    Returns
    -------
    dict
        ``min``, ``median``, ``max`` and ``mean`` images per cluster (None without a cluster),
        ``largest_percent`` (the largest cluster's share of all images) and ``histogram``
        (:func:`size_bins`), JSON-ready.
    """
    labels = np.asarray(labels)
    sizes = np.unique(labels[labels != -1], return_counts=True)[1]
    if sizes.size == 0:
        return {"min": None, "median": None, "max": None, "mean": None, "largest_percent": 0.0, "histogram": {}}
    return {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max()),
            "mean": float(sizes.mean()), "largest_percent": 100 * float(sizes.max()) / labels.size,
            "histogram": size_bins(sizes)}


def grouping_stats(labels: np.ndarray, names: Sequence[str]) -> dict:
    """The figures of a grouping, JSON-ready, for an iteration's record.

    Parameters
    ----------
    labels : ndarray of shape (N, S + 1)
        DBSCAN labels of every target image per feature type, global first; -1 marks an outlier.
    names : sequence of str
        The S + 1 type names (global, upper, lower).

    Returns
    -------
    dict
        ``images_total`` N; ``images_kept`` and ``kept_percent``: the images no type calls an outlier (the
        training set of the iteration); per type ``clusters_<type>``, ``kept_percent_<type>`` (images in a
        cluster of that type) and ``cluster_sizes_<type>`` (:func:`cluster_sizes`).
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[1] != len(names):
        raise ValueError(f"grouping_stats: expected labels of shape (N, {len(names)}), got {labels.shape}")
    total = labels.shape[0]
    kept = len(pseudo_labels(list(labels.T))[0])
    stats: dict = {"images_total": total, "images_kept": kept, "kept_percent": _percent(kept, total)}
    for column, name in zip(labels.T, names):
        stats[f"clusters_{name}"] = count_clusters(column)
        stats[f"kept_percent_{name}"] = _percent(int((column != -1).sum()), total)
        stats[f"cluster_sizes_{name}"] = cluster_sizes(column)
    return stats


def _percent(part: int, total: int) -> float:
    return 100 * part / total if total else 0.0


def grouping_warnings(stats: dict, names: Sequence[str], images_per_identity: float | None = None,
                      by_rule: bool = False) -> list[str]:
    """One line per sign of a degenerate grouping, each with the advice that fits its cause.

    Parameters
    ----------
    stats : dict
        :func:`grouping_stats` of the grouping.
    names : sequence of str
        The type names, global first.
    images_per_identity : float, optional
        The images per person the run assumes (``--images-per-identity``, or a labelled target's own figure):
        global clusters far larger or smaller on average are a sign of merged or split people.
    by_rule : bool
        rho came from ``images_per_identity`` (:func:`reid.cluster.rho_by_rule`): the advice names that number
        rather than ``--rho``.

    Returns
    -------
    list of str
        Empty for a grouping that shows neither sign.
    """
    if by_rule:
        larger, smaller = ("more images per person (--images-per-identity above "
                           f"{images_per_identity:g}, a larger rho)", "fewer images per person "
                           f"(--images-per-identity below {images_per_identity:g}, a smaller rho)")
    else:
        larger, smaller = "a larger --rho", "a smaller --rho"
    too_small = f"eps is too small for these features: try {larger} or a better source model"
    too_large = f"eps reaches across people: try {smaller} or a better source model"
    warnings = []
    total, kept = stats["images_total"], stats["kept_percent"]
    if kept < LOW_KEPT_PERCENT:
        warnings.append(f"warning: only {kept:.1f}% of the {total:,} images are in a cluster of every feature type, "
                        f"the rest are outliers; {too_small}")
    largest = {name: stats[f"cluster_sizes_{name}"]["largest_percent"] for name in names}
    merged = ", ".join(f"{name} {share:.1f}%" for name, share in largest.items() if share > HIGH_LARGEST_PERCENT)
    if merged:
        warnings.append(f"warning: one cluster holds most of the {total:,} images ({merged}); {too_large}")
    mean = stats[f"cluster_sizes_{names[0]}"]["mean"]
    if images_per_identity is not None and mean is not None:
        said = f"global clusters hold {mean:.1f} images on average for {images_per_identity:g} per person assumed"
        if mean > SIZE_FACTOR * images_per_identity:
            warnings.append(f"warning: {said}, people merged; {too_large}")
        elif mean < images_per_identity / SIZE_FACTOR:
            warnings.append(f"warning: {said}, people cut into pieces; {too_small}")
    return warnings


@dataclass
class Grouping:
    """One iteration's grouping of the target: the DBSCAN labels of every target training image, one column per
    feature type (N, S+1), -1 = outlier, and the eps of each type."""

    labels: np.ndarray
    eps: list[float]

    @functools.cached_property
    def kept(self) -> np.ndarray:
        """Indices of the images no feature type calls an outlier (step 5)."""
        return pseudo_labels(list(self.labels.T))[0]

    def summary(self, names: Sequence[str], true_ids: np.ndarray | None = None) -> dict:
        """The grouping's figures for the iteration's record: eps per feature type, :func:`grouping_stats` and,
        with the images' true identities, the global clusters' pair precision and recall against them (a
        diagnostic: the algorithm never sees them)."""
        record = {f"eps_{n}": float(e) for n, e in zip(names, self.eps)}
        record.update(grouping_stats(self.labels, names))
        if true_ids is not None:
            record["pair_precision"], record["pair_recall"] = pair_scores(self.labels[:, 0], true_ids)
        return record


def check_enough_clusters(grouping: Grouping, batch_size: int, num_instances: int, iteration: int) -> None:
    """A batch needs ``batch_size / num_instances`` distinct global clusters among the kept images; UserError
    otherwise. The advice follows the cause: few clusters holding most images were merged (eps too large), few
    images kept were left out as outliers (eps too small)."""
    needed = batch_size // num_instances
    found = len(np.unique(grouping.labels[grouping.kept, 0]))
    if found < needed:
        kept, total = len(grouping.kept), len(grouping.labels)
        rho = "a smaller --rho" if kept * 2 >= total else "a larger --rho"
        raise UserError(f"iteration {iteration}: grouping kept {found} usable clusters ({kept} of {total} "
                        f"images), a batch of {batch_size} needs {needed}; stopped, the last checkpoint is kept "
                        f"(try {rho}, a smaller --batch-size or a better source model)")
