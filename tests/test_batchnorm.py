"""BatchNorm over groups of images (reid.models.group_batchnorm): the paper's 2 GPUs x 64 setting on one device."""
import copy

import pytest
import torch
from torch import nn

from reid import models
from reid.models import GroupBatchNorm, check_bn_group_size, group_batchnorm
from reid.utils.errors import UserError

GROUP = 4
# (layer class, kwargs, input shape of a batch of two groups, offset)
LAYERS = {
    "2d": (nn.BatchNorm2d, {}, (2 * GROUP, 3, 5, 4), 2.0),
    "1d": (nn.BatchNorm1d, {"momentum": 0.3}, (2 * GROUP, 6), -5.0),
    "1d_cumulative": (nn.BatchNorm1d, {"momentum": None}, (2 * GROUP, 4, 3), 0.0),
}


def initialised(layer_class, kwargs, channels):
    torch.manual_seed(0)
    layer = layer_class(channels, **kwargs).double()
    nn.init.uniform_(layer.weight, 0.5, 1.5)
    nn.init.uniform_(layer.bias, -0.5, 0.5)
    return layer


@pytest.mark.parametrize("case", list(LAYERS))
def test_a_batch_of_two_groups_equals_each_half_run_separately(case):
    layer_class, kwargs, shape, offset = LAYERS[case]
    original = initialised(layer_class, kwargs, shape[1])
    grouped = group_batchnorm(copy.deepcopy(original), GROUP)
    assert isinstance(grouped, GroupBatchNorm)
    halves_layer, first_half_layer = copy.deepcopy(original), copy.deepcopy(original)
    for step in range(2):
        torch.manual_seed(step + 1)
        images = (torch.randn(shape, dtype=torch.float64) * 3 + offset).requires_grad_(True)
        output_grad = torch.randn(shape, dtype=torch.float64)
        output = grouped(images)
        (output * output_grad).sum().backward()

        halves = [image.detach().clone().requires_grad_(True) for image in images.split(GROUP)]
        expected = torch.cat([halves_layer(half) for half in halves])
        (expected * output_grad).sum().backward()
        first_half_layer(images[:GROUP].detach())

        torch.testing.assert_close(output, expected, rtol=0, atol=1e-12)
        torch.testing.assert_close(images.grad, torch.cat([half.grad for half in halves]), rtol=0, atol=1e-12)
        for name in ("weight", "bias"):
            torch.testing.assert_close(getattr(grouped, name).grad, getattr(halves_layer, name).grad)
        grouped.zero_grad()
        halves_layer.zero_grad()
    # Running statistics: those of the first group only, once per call (DataParallel on 2 GPUs).
    assert int(grouped.num_batches_tracked) == 2
    torch.testing.assert_close(grouped.running_mean, first_half_layer.running_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(grouped.running_var, first_half_layer.running_var, rtol=0, atol=1e-12)
    assert not torch.allclose(grouped.running_mean, halves_layer.running_mean)
    # Evaluation is plain BatchNorm with those statistics.
    probe = torch.randn(shape, dtype=torch.float64)
    torch.testing.assert_close(grouped.eval()(probe), first_half_layer.eval()(probe))


@pytest.mark.slow
def test_a_resnet_in_train_mode_normalises_each_group_on_its_own():
    torch.manual_seed(0)
    model = models.create("resnet18", num_split=2, num_features=32, pretrained=False)
    original = copy.deepcopy(model)
    grouped = group_batchnorm(model, 8)
    assert sum(isinstance(module, GroupBatchNorm) for module in grouped.modules()) == 21
    assert not any(isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) for module in grouped.modules())
    images = torch.randn(16, 3, 64, 32)
    output = grouped.train()(images)
    first, second = original.train()(images[:8]), copy.deepcopy(original)(images[8:])
    torch.testing.assert_close(output.pooled, torch.cat([first.pooled, second.pooled]), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(output.embedding, torch.cat([first.embedding, second.embedding]), rtol=1e-4,
                               atol=1e-5)
    whole = copy.deepcopy(original)(images)  # one group of 16 normalises otherwise
    assert (whole.pooled - output.pooled).abs().max() > 1e-3


def test_parameters_are_shared_and_size_zero_keeps_the_model():
    model = models.create("resnet18", num_split=2, num_features=32, pretrained=False)
    weight = model.feat_bn.weight
    assert group_batchnorm(model, 0) is model and isinstance(model.feat_bn, nn.BatchNorm1d)
    group_batchnorm(model, 4)
    assert model.feat_bn.weight is weight and model.feat_bn.group_size == 4


def test_a_batch_that_does_not_split_into_groups_is_refused():
    layer = group_batchnorm(nn.BatchNorm1d(3), 4)
    with pytest.raises(ValueError, match="batch of 6 cannot be split into groups of 4"):
        layer(torch.randn(6, 3))


@pytest.mark.parametrize("group_size, batch_size, processes, gpus", [
    (64, 128, 1, 1),   # two ghost groups on one device
    (64, 128, 1, 2),   # DataParallel, one group per GPU: the paper
    (64, 128, 4, 1),   # DDP, a group spans two ranks of 32
    (64, 128, 2, 1),   # DDP, one group per rank
    (16, 128, 2, 1),   # DDP, four groups per rank
    (0, 96, 1, 1),     # one group per batch
])
def test_layouts_that_tile_the_batch_are_accepted(group_size, batch_size, processes, gpus):
    check_bn_group_size(group_size, batch_size, processes, gpus)


@pytest.mark.parametrize("group_size, batch_size, processes, gpus, message", [
    (64, 32, 1, 1, "--bn-group-size 64 does not divide --batch-size 32"),
    (64, 128, 1, 4, "DataParallel gives each of 4 GPUs 32 images"),
    (64, 192, 2, 1, "each of 2 processes holds 96 images"),
    (-1, 128, 1, 1, "expected a number of images >= 0"),
])
def test_layouts_that_do_not_tile_the_batch_name_the_option(group_size, batch_size, processes, gpus, message):
    with pytest.raises(UserError, match=message):
        check_bn_group_size(group_size, batch_size, processes, gpus)
