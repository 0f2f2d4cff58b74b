"""Triplet loss of SSG (Fu et al., "Self-similarity Grouping", ICCV 2019) with its two miners.

``batch_hard`` (Hermans et al., "In Defense of the Triplet Loss", 2017) trains the source model: each
anchor is paired with its farthest positive and nearest negative. ``block`` is SSG's target miner: the batch
is made of consecutive blocks of ``num_instances`` images of one global cluster, every ordered pair j < k of
a block is a positive pair, and the negative of anchor j is the nearest sample whose label, in the feature
type being trained, differs from j's. The positive pair keeps its block even when the stripe labels of j and k
differ, as the released code does (docs/algorithm.md, grouping step 6).

Anchors or pairs without a negative in the batch are left out; a batch with nothing left gives a zero loss
that is still part of the graph, where the released code crashed.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MINERS = ("batch_hard", "block")


def euclidean_distances(features: Tensor) -> Tensor:
    """Pairwise Euclidean distances, ``sqrt(clamp(squared, min=1e-12))`` so the gradient stays finite.

    Parameters
    ----------
    features : Tensor
        (B, D) features.

    Returns
    -------
    Tensor
        (B, B) distances.
    """
    squared_norms = features.pow(2).sum(dim=1, keepdim=True)
    squared = torch.addmm(squared_norms + squared_norms.t(), features, features.t(), beta=1, alpha=-2)
    return squared.clamp(min=1e-12).sqrt()


class TripletLoss(nn.Module):
    """Margin triplet loss on Euclidean distances, with batch-hard or SSG block mining.

    Parameters
    ----------
    margin : float
        Margin of ``max(0, d_ap - d_an + margin)``.
    mining : str
        ``batch_hard`` (source training) or ``block`` (SSG target training).
    num_instances : int
        Size of the identity blocks the batch is made of; used by ``block`` mining only.
    """

    def __init__(self, margin: float = 0.5, mining: str = "batch_hard", num_instances: int = 4) -> None:
        super().__init__()
        if mining not in MINERS:
            raise ValueError(f"mining must be one of {', '.join(MINERS)}, got {mining!r}")
        if num_instances < 1:
            raise ValueError(f"num_instances must be at least 1, got {num_instances}")
        self.margin = margin
        self.mining = mining
        self.num_instances = num_instances

    def forward(self, features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
        """Compute the loss and its precision on one batch.

        Parameters
        ----------
        features : Tensor
            (B, D) features of the batch.
        labels : Tensor
            (B,) labels of the batch in this feature type.

        Returns
        -------
        tuple of Tensor
            The mean hinge loss over the valid triplets, and the fraction of them with ``d_an > d_ap``
            (detached); both 0 when no triplet is valid.
        """
        distances = euclidean_distances(features)
        same_label = labels.unsqueeze(0) == labels.unsqueeze(1)
        if self.mining == "batch_hard":
            positive_distances, negative_distances, valid = _mine_batch_hard(distances, same_label)
        else:
            positive_distances, negative_distances, valid = _mine_blocks(distances, same_label, self.num_instances)
        # Means over the valid triplets by masking, not by selecting them: a selection's size is only known
        # once the GPU has computed the mask, and waiting for it would stall every training step.
        count = valid.sum().clamp(min=1)
        hinges = F.relu(positive_distances - negative_distances + self.margin)
        loss = torch.where(valid, hinges, 0.0).sum() / count
        precision = ((negative_distances > positive_distances) & valid).sum().float().div(count).detach()
        return loss, precision


def _nearest_negatives(distances: Tensor, same_label: Tensor) -> tuple[Tensor, Tensor]:
    """Per row: the distance to the nearest sample of another label, and whether there is one."""
    return distances.masked_fill(same_label, float("inf")).min(dim=1).values, (~same_label).any(dim=1)


def _mine_batch_hard(distances: Tensor, same_label: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(d_ap, d_an) of every anchor, and whether the anchor has another positive and a negative in the batch."""
    itself = torch.eye(len(distances), dtype=torch.bool, device=distances.device)
    positives = same_label & ~itself
    farthest_positive = distances.masked_fill(~positives, float("-inf")).max(dim=1).values
    nearest_negative, has_negative = _nearest_negatives(distances, same_label)
    return farthest_positive, nearest_negative, positives.any(dim=1) & has_negative


def _mine_blocks(distances: Tensor, same_label: Tensor, num_instances: int) -> tuple[Tensor, Tensor, Tensor]:
    """(d_ap, d_an) of every ordered pair j < k inside a block, and whether its anchor j has a negative in the
    batch."""
    batch_size = len(distances)
    if batch_size % num_instances != 0:
        raise ValueError(f"batch size {batch_size} is not a multiple of num_instances {num_instances}")
    first, second = torch.triu_indices(num_instances, num_instances, offset=1, device=distances.device)
    block_starts = torch.arange(0, batch_size, num_instances, device=distances.device).unsqueeze(1)
    anchors = (block_starts + first).reshape(-1)
    positives = (block_starts + second).reshape(-1)
    nearest_negative, has_negative = _nearest_negatives(distances, same_label)
    return distances[anchors, positives], nearest_negative[anchors], has_negative[anchors]
