"""Top-k accuracy of identity logits, as logged while training re-ID classifiers (open-reid, SSG)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from reid.utils.errors import UserError


def accuracy(
    output: torch.Tensor | np.ndarray, target: torch.Tensor | np.ndarray, topk: Sequence[int] = (1,)
) -> list[float]:
    """Fraction of samples whose target class is among the k highest logits, for each k.

    Parameters
    ----------
    output : torch.Tensor or np.ndarray
        Logits (or any scores), samples x classes.
    target : torch.Tensor or np.ndarray
        Class index of each sample.
    topk : sequence of int
        The values of k, each between 1 and the number of classes.

    Returns
    -------
    list of float
        One accuracy in [0, 1] per k, in the order of ``topk``.
    """
    scores = torch.as_tensor(output).detach()
    labels = torch.as_tensor(target).detach().to(scores.device)
    if scores.ndim != 2 or len(scores) == 0:
        raise UserError(
            f"output: expected a non-empty samples x classes matrix, got shape {tuple(scores.shape)}"
        )
    if labels.shape != (len(scores),):
        raise UserError(f"target: expected {len(scores)} class indices, got shape {tuple(labels.shape)}")
    n_classes = scores.shape[1]
    if not topk or any(not 1 <= k <= n_classes for k in topk):
        raise UserError(f"topk: expected values between 1 and the {n_classes} classes, got {tuple(topk)}")
    best = scores.topk(max(topk), dim=1).indices
    hit = best == labels[:, None]
    return [hit[:, :k].any(dim=1).double().mean().item() for k in topk]
