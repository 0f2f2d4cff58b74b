"""Evaluation metrics of person re-identification: CMC, mAP (open-reid's protocol) and top-k accuracy."""

from reid.evaluation_metrics.classification import accuracy
from reid.evaluation_metrics.ranking import NoValidQueryError, cmc, mean_ap

__all__ = ["NoValidQueryError", "accuracy", "cmc", "mean_ap"]
