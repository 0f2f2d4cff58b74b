"""Losses of SSG (ICCV 2019): the triplet loss with batch-hard and block miners.

Cross-entropy for source training is plain ``torch.nn.CrossEntropyLoss``.
"""

from reid.loss.triplet import TripletLoss, euclidean_distances

__all__ = ["TripletLoss", "euclidean_distances"]
