"""Models of SSG (ICCV 2019): the part-pooling ResNet, created by name.

``create("resnet50", num_split=2)`` gives the paper's network: a torchvision ResNet-50 trunk whose map is
pooled globally and over two horizontal stripes, plus a 2048-d embedding (and a classifier when
``num_classes > 0``).
"""

from __future__ import annotations

from reid.models.batchnorm import (
    DistributedBatchNorm,
    GroupBatchNorm,
    check_bn_group_size,
    convert_sync_batchnorm,
    group_batchnorm,
)
from reid.models.resnet import ReIDOutput, ResNet, check_num_split, feature_map_height, feature_type_names, names

__all__ = ["DistributedBatchNorm", "GroupBatchNorm", "ReIDOutput", "ResNet", "check_bn_group_size",
           "check_num_split", "convert_sync_batchnorm", "create", "feature_map_height", "feature_type_names",
           "group_batchnorm", "names"]


def create(
    name: str,
    *,
    num_split: int = 2,
    num_features: int = 2048,
    num_classes: int = 0,
    dropout: float = 0.1,
    pretrained: bool = True,
    pretrained_path: str | None = None,
) -> ResNet:
    """Build a model by architecture name.

    Parameters
    ----------
    name : str
        One of ``resnet18``, ``resnet34`` (512 channels), ``resnet50``, ``resnet101``, ``resnet152``
        (2048 channels).
    num_split : int
        Horizontal stripes pooled besides the global pool (2 in every paper setting).
    num_features : int
        Width of the embedding.
    num_classes : int
        Identities of the classifier; 0 builds none (target training, evaluation).
    dropout : float
        Dropout probability before the classifier.
    pretrained : bool
        Start the trunk from torchvision's ImageNet weights.
    pretrained_path : str or None
        A torchvision-format ResNet state dict to start the trunk from; overrides ``pretrained``.

    Returns
    -------
    ResNet
        The model, in training mode.

    Raises
    ------
    UserError
        For an unknown name, invalid head options, unavailable ImageNet weights or an unusable
        ``pretrained_path``.
    """
    return ResNet(
        name,
        num_split=num_split,
        num_features=num_features,
        num_classes=num_classes,
        dropout=dropout,
        pretrained=pretrained,
        pretrained_path=pretrained_path,
    )
