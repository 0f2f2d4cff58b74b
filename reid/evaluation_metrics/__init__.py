"""Evaluation metrics of person re-identification: CMC and mAP (open-reid's protocol)."""

from reid.evaluation_metrics.ranking import NoValidQueryError, cmc, mean_ap

__all__ = ["NoValidQueryError", "cmc", "mean_ap"]
