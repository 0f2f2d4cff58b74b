"""Checkpoints in the exact layout of the authors' released source models (market1501_trained.pth.tar,
dukemtmc_trained.pth.tar): a ResNet-50 trained with DataParallel under PyTorch 0.4."""
import numpy as np
import torch

from reid import models


def write_released_checkpoint(path, num_classes: int, seed: int = 0) -> dict:
    """Write ``{state_dict, epoch, best_top1}`` as the authors did and return the state dict written.

    The state dict holds ``module.base.*`` with the ImageNet ``base.fc.*``, ``module.feat.weight`` (no bias),
    ``module.feat_bn.*`` and the head ``module.classifier_x2.weight/bias``; ``best_top1`` is a numpy scalar.
    """
    torch.manual_seed(seed)
    model = models.create("resnet50", num_split=2, num_features=2048, num_classes=0, pretrained=False)
    state = {f"module.{key}": value for key, value in model.state_dict().items()}
    state["module.base.fc.weight"] = torch.randn(1000, 2048) * 0.01
    state["module.base.fc.bias"] = torch.zeros(1000)
    state["module.classifier_x2.weight"] = torch.randn(num_classes, 2048) * 0.001
    state["module.classifier_x2.bias"] = torch.zeros(num_classes)
    torch.save({"state_dict": state, "epoch": 150, "best_top1": np.float64(0.8080)}, str(path))
    return state
