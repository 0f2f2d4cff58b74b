"""The paper's setting and its published figures (Fu et al., "Self-similarity Grouping", ICCV 2019,
arXiv 1811.10144, and the authors' released run): what the scripts default to, what a projection of a run cut
short assumes and what ``reid.report`` compares a run with. docs/algorithm.md explains each value.
"""
from __future__ import annotations

from dataclasses import dataclass

# The model: what applies when neither the user nor the checkpoint says otherwise.
PAPER_MODEL = {"arch": "resnet50", "num_split": 2, "features": 2048, "height": 256, "width": 128}


@dataclass(frozen=True)
class Schedule:
    """Optimisation and grouping of one stage, as released."""

    epochs: int
    lr: float
    batch_size: int
    num_instances: int
    bn_group_size: int = 0
    iterations: int = 0  # adaptation only: grouping + training rounds
    label_iteration: int = 0  # SSG++ only: the iteration at which the labelled set is drawn


SOURCE = Schedule(epochs=150, lr=3e-4, batch_size=128, num_instances=8)
# The authors' 2 GPUs x 64 images under DataParallel: BatchNorm over groups of 64.
ADAPTATION = Schedule(epochs=70, lr=6e-5, batch_size=128, num_instances=4, bn_group_size=64, iterations=30,
                      label_iteration=5)
# The grouping step: DBSCAN's eps from the closest rho of the pairs, the source term's weight, the k-reciprocal
# neighbourhoods and DBSCAN's min_samples.
GROUPING = {"rho": 1.6e-3, "lambda_value": 0.1, "k1": 20, "k2": 6, "min_samples": 4}

# The table of the authors' SSG README, in percent, by stage ("before" adaptation, "SSG", "SSG++") and
# (source, target): R1 and mAP, and for SSG the R5/R10 that the ICCV 2019 paper adds to the same row.
PUBLISHED: dict[tuple[str, str, str], dict[str, float]] = {
    ("before", "market1501", "dukemtmc"): {"mAP": 16.1, "top1": 30.5},
    ("SSG", "market1501", "dukemtmc"): {"mAP": 53.4, "top1": 73.0, "top10": 83.2},
    ("SSG++", "market1501", "dukemtmc"): {"mAP": 60.3, "top1": 76.0},
    ("before", "dukemtmc", "market1501"): {"mAP": 26.6, "top1": 54.6},
    ("SSG", "dukemtmc", "market1501"): {"mAP": 58.3, "top1": 80.0, "top5": 90.0, "top10": 92.4},
    ("SSG++", "dukemtmc", "market1501"): {"mAP": 68.7, "top1": 86.2},
    ("before", "market1501", "msmt17"): {"mAP": 2.7, "top1": 8.6},
    ("SSG", "market1501", "msmt17"): {"mAP": 13.2, "top1": 31.6},
    ("SSG++", "market1501", "msmt17"): {"mAP": 16.6, "top1": 37.6},
    ("before", "dukemtmc", "msmt17"): {"mAP": 3.82, "top1": 12.38},
    ("SSG", "dukemtmc", "msmt17"): {"mAP": 13.3, "top1": 32.2},
    ("SSG++", "dukemtmc", "msmt17"): {"mAP": 18.3, "top1": 41.6},
}
# The SSG README's source-only row: the source model tested on its own dataset, in percent.
PUBLISHED_SOURCE: dict[str, dict[str, float]] = {
    "dukemtmc": {"mAP": 70.5, "top1": 82.6},
    "market1501": {"mAP": 80.8, "top1": 92.5},
    "msmt17": {"mAP": 48.6, "top1": 73.6},
}
