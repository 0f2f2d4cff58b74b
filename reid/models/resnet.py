"""Part-pooling ResNet of SSG (Fu et al., "Self-similarity Grouping", ICCV 2019, arXiv 1811.10144).

A torchvision ResNet up to ``layer4`` (last stride 2, so a 256x128 image gives an 8x4 map) whose map is
average-pooled globally and over ``num_split`` horizontal stripes, plus the open-reid embedding head
(Linear -> BN1d -> ReLU) and an optional identity classifier for source training.

Module names follow open-reid (``base.*``, ``feat``, ``feat_bn``, ``classifier``) so that the authors'
checkpoints map onto this model once their ``module.`` prefixes and classifier keys are removed.
"""

from __future__ import annotations

from collections import OrderedDict
from pathlib import Path
from typing import Callable, NamedTuple

import torch
import torchvision
from torch import Tensor, nn
from torchvision.models import WeightsEnum

from reid.utils.errors import UserError, first_line
from reid.utils.weights_only import load_weights_only

# The torchvision children that make up the convolutional trunk; ``avgpool`` and ``fc`` are replaced.
BACKBONE_LAYERS = ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")

# Stride-2 stages of the trunk: conv1, maxpool, layer2, layer3, layer4.
_NUM_DOWNSAMPLINGS = 5

_ARCHITECTURES: dict[str, tuple[Callable[..., torchvision.models.ResNet], type[WeightsEnum], int]] = {
    "resnet18": (torchvision.models.resnet18, torchvision.models.ResNet18_Weights, 512),
    "resnet34": (torchvision.models.resnet34, torchvision.models.ResNet34_Weights, 512),
    "resnet50": (torchvision.models.resnet50, torchvision.models.ResNet50_Weights, 2048),
    "resnet101": (torchvision.models.resnet101, torchvision.models.ResNet101_Weights, 2048),
    "resnet152": (torchvision.models.resnet152, torchvision.models.ResNet152_Weights, 2048),
}


class ReIDOutput(NamedTuple):
    """What :class:`ResNet` returns; a NamedTuple so that DataParallel gathers every field.

    Attributes
    ----------
    pooled : Tensor
        (B, S+1, C): index 0 is the global average pool, 1..S the stripe pools from top to bottom.
    embedding : Tensor
        (B, num_features): ReLU(BN1d(Linear(global pool))).
    logits : Tensor or None
        (B, num_classes) identity scores, or None when the model has no classifier.
    """

    pooled: Tensor
    embedding: Tensor
    logits: Tensor | None


def feature_type_names(num_split: int) -> list[str]:
    """Names of the S+1 pooled feature types, in the order of ``ReIDOutput.pooled``: global, then the stripes top
    to bottom (upper and lower for the paper's two)."""
    if num_split == 2:
        return ["global", "upper", "lower"]
    return ["global", *(f"stripe{s}" for s in range(num_split))]


def names() -> list[str]:
    """Return the accepted architecture names."""
    return list(_ARCHITECTURES)


def feature_map_height(input_height: int) -> int:
    """Height of the ``layer4`` map for an input of ``input_height`` pixels.

    Every stride-2 stage of a torchvision ResNet (7x7 conv with padding 3, 3x3 max pool with padding 1,
    3x3 or 1x1 stride-2 convs) maps a height h to ceil(h / 2).

    Parameters
    ----------
    input_height : int
        Height of the network input in pixels.

    Returns
    -------
    int
        Height of the feature map (256 -> 8, 128 -> 4, 64 -> 2).
    """
    if input_height < 1:
        raise UserError(f"--height {input_height} must be a positive number of pixels")
    height = input_height
    for _ in range(_NUM_DOWNSAMPLINGS):
        height = (height + 1) // 2
    return height


def check_num_split(input_height: int, num_split: int) -> None:
    """Raise UserError unless ``num_split`` stripes tile the feature map of an ``input_height`` input.

    Parameters
    ----------
    input_height : int
        Height of the network input in pixels.
    num_split : int
        Number of horizontal stripes (``--num-split``).
    """
    if num_split < 1:
        raise UserError(f"--num-split {num_split} must be at least 1")
    height = feature_map_height(input_height)
    if height % num_split != 0:
        raise UserError(
            f"--num-split {num_split} does not divide the feature map height {height} of a "
            f"{input_height}-pixel input; use a divisor of {height}"
        )


class ResNet(nn.Module):
    """ResNet trunk with global and stripe average pooling and an embedding head (SSG, section 2).

    Parameters
    ----------
    arch : str
        One of :func:`names`.
    num_split : int
        Number of horizontal stripes S pooled besides the global pool.
    num_features : int
        Width of the embedding.
    num_classes : int
        Identities of the classifier on the embedding; 0 for no classifier.
    dropout : float
        Dropout probability before the classifier.
    pretrained : bool
        Start the trunk from ImageNet weights (downloaded by torchvision unless cached).
    pretrained_path : str or None
        A torchvision-format ResNet state dict to start the trunk from instead of the download.
    """

    def __init__(
        self,
        arch: str,
        *,
        num_split: int = 2,
        num_features: int = 2048,
        num_classes: int = 0,
        dropout: float = 0.1,
        pretrained: bool = True,
        pretrained_path: str | None = None,
    ) -> None:
        super().__init__()
        _check_head_options(num_split, num_features, num_classes, dropout)
        constructor, weights_enum, out_channels = _architecture(arch)
        self.arch = arch
        self.num_split = num_split
        self.out_channels = out_channels
        self.num_features = num_features
        self.num_classes = num_classes

        trunk = constructor(weights=None)
        self.base = nn.Sequential(OrderedDict((name, getattr(trunk, name)) for name in BACKBONE_LAYERS))
        if pretrained_path is not None:
            state = _read_state_dict(pretrained_path)
            _load_trunk(self.base, state, f"--pretrained-path {pretrained_path}")
        elif pretrained:
            state = _download_imagenet_state(arch, weights_enum)
            _load_trunk(self.base, state, f"ImageNet weights of {arch}")

        self.feat = nn.Linear(out_channels, num_features, bias=False)
        self.feat_bn = nn.BatchNorm1d(num_features)
        self.drop = nn.Dropout(dropout)
        self.classifier = nn.Linear(num_features, num_classes) if num_classes > 0 else None
        self._init_new_layers()

    def _init_new_layers(self) -> None:
        nn.init.normal_(self.feat.weight, std=0.001)
        nn.init.ones_(self.feat_bn.weight)
        nn.init.zeros_(self.feat_bn.bias)
        if self.classifier is not None:
            nn.init.normal_(self.classifier.weight, std=0.001)
            nn.init.zeros_(self.classifier.bias)

    def forward(self, images: Tensor) -> ReIDOutput:
        """Pool the trunk's map and embed its global pool.

        Parameters
        ----------
        images : Tensor
            (B, 3, H, W) normalised images.

        Returns
        -------
        ReIDOutput
            Pooled features (B, S+1, C), embedding (B, num_features), logits (B, num_classes) or None.
        """
        feature_map = self.base(images)
        pooled = self._pool(feature_map)
        embedding = torch.relu(self.feat_bn(self.feat(pooled[:, 0])))
        logits = self.classifier(self.drop(embedding)) if self.classifier is not None else None
        return ReIDOutput(pooled, embedding, logits)

    def _pool(self, feature_map: Tensor) -> Tensor:
        batch, channels, height, width = feature_map.shape
        stripe_height = height // self.num_split
        if stripe_height == 0:
            raise ValueError(f"a feature map of height {height} cannot hold {self.num_split} stripes")
        # Rows [h//S*s, h//S*(s+1)) per stripe: when S does not divide h the bottom rows are left out.
        stripes = feature_map[:, :, : stripe_height * self.num_split]
        stripes = stripes.reshape(batch, channels, self.num_split, stripe_height * width).mean(dim=3)
        global_pool = feature_map.mean(dim=(2, 3))
        return torch.cat([global_pool.unsqueeze(1), stripes.transpose(1, 2)], dim=1)

    def base_parameters(self) -> list[nn.Parameter]:
        """Parameters of the (possibly pretrained) convolutional trunk."""
        return list(self.base.parameters())

    def new_parameters(self) -> list[nn.Parameter]:
        """Parameters of the layers added on top of the trunk (embedding, its BN, classifier)."""
        trunk = {id(parameter) for parameter in self.base.parameters()}
        return [parameter for parameter in self.parameters() if id(parameter) not in trunk]


def _architecture(arch: str) -> tuple[Callable[..., torchvision.models.ResNet], type[WeightsEnum], int]:
    if arch not in _ARCHITECTURES:
        raise UserError(f"-a/--arch: unknown architecture {arch!r}; expected one of {', '.join(names())}")
    return _ARCHITECTURES[arch]


def _check_head_options(num_split: int, num_features: int, num_classes: int, dropout: float) -> None:
    if num_split < 1:
        raise UserError(f"--num-split {num_split} must be at least 1")
    if num_features < 1:
        raise UserError(f"--features {num_features} must be at least 1")
    if not 0.0 <= dropout < 1.0:
        raise UserError(f"--dropout {dropout} must be in [0, 1)")
    if num_classes < 0:
        raise ValueError(f"num_classes must be >= 0, got {num_classes}")


def _short_reason(error: BaseException) -> str:
    reason = f"{type(error).__name__}: {first_line(error)}"
    return reason if len(reason) <= 120 else reason[:117] + "..."


def _download_imagenet_state(arch: str, weights_enum: type[WeightsEnum]) -> dict[str, Tensor]:
    weights = weights_enum["IMAGENET1K_V1"]
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    # URLError/socket errors are OSErrors; a truncated or corrupt download fails the hash with RuntimeError.
    except (OSError, RuntimeError) as error:
        raise UserError(
            f"could not load ImageNet weights for {arch} ({_short_reason(error)}); pass --no-pretrained to "
            "train from scratch or --pretrained-path FILE with a torchvision state dict"
        ) from error


def _read_state_dict(path: str) -> dict[str, Tensor]:
    if not Path(path).is_file():
        raise UserError(f"--pretrained-path {path}: no such file")
    try:
        state = load_weights_only(path, f"--pretrained-path {path}")
    except UserError:
        raise
    except Exception as error:  # torch.load raises many unrelated types for a file that is not a state dict
        reason = _short_reason(error)
        raise UserError(f"--pretrained-path {path}: cannot read a state dict ({reason})") from error
    if not isinstance(state, dict):
        raise UserError(f"--pretrained-path {path}: expected a state dict, found {type(state).__name__}")
    return state


def _load_trunk(trunk: nn.Sequential, state: dict[str, Tensor], source: str) -> None:
    """Load a torchvision ResNet state dict into the trunk, ignoring its ``fc`` classifier."""
    given = {key: value for key, value in state.items() if not key.startswith("fc.")}
    expected = trunk.state_dict()
    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys())
    shared = expected.keys() & given.keys()
    misshapen = sorted(key for key in shared if getattr(given[key], "shape", None) != expected[key].shape)
    problems = [
        f"{len(keys)} {kind} keys (e.g. {keys[0]})"
        for kind, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", misshapen))
        if keys
    ]
    if problems:
        raise UserError(f"{source} does not match a torchvision ResNet trunk: {'; '.join(problems)}")
    trunk.load_state_dict(given)
