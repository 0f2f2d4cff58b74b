"""Tests of the SSG part-pooling ResNet: shapes, pooling arithmetic, head wiring, init, weights loading."""

import re
import urllib.error

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torch.nn.parallel import scatter_gather

from reid import models
from reid.models import ReIDOutput, check_num_split, feature_map_height
from reid.utils.errors import UserError

ARCH_NAMES = ["resnet18", "resnet34", "resnet50", "resnet101", "resnet152"]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    # These inputs are tiny: on a shared machine intra-op threads only add spin time.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small_model(arch="resnet18", **options):
    options.setdefault("pretrained", False)
    options.setdefault("num_features", 32)
    torch.manual_seed(0)
    return models.create(arch, **options)


def test_names_lists_the_five_resnets():
    assert models.names() == ARCH_NAMES


def test_unknown_architecture_is_a_user_error_listing_the_names():
    expected = "-a/--arch: unknown architecture 'vgg16'; expected one of " + ", ".join(ARCH_NAMES)
    with pytest.raises(UserError, match=re.escape(expected)):
        models.create("vgg16", pretrained=False)


@pytest.mark.parametrize("arch, channels", [("resnet18", 512), ("resnet50", 2048)])
@pytest.mark.parametrize("num_split", [1, 2, 3])
def test_output_shapes(arch, channels, num_split):
    model = small_model(arch, num_split=num_split, num_features=64, num_classes=7).eval()
    sizes = (model.num_split, model.out_channels, model.num_features, model.num_classes)
    assert sizes == (num_split, channels, 64, 7)
    with torch.no_grad():
        output = model(torch.randn(2, 3, 32 * num_split, 32))
    assert isinstance(output, ReIDOutput)
    assert output.pooled.shape == (2, num_split + 1, channels)
    assert output.embedding.shape == (2, 64)
    assert output.logits.shape == (2, 7)


@pytest.mark.parametrize("num_split, expected_stripes", [(1, [1.5]), (2, [0.5, 2.5]), (3, [0.0, 1.0, 2.0])])
def test_stripes_pool_rows_top_to_bottom_on_a_known_map(num_split, expected_stripes):
    # A 4x2 map whose value is row + 10 * channel: S = 3 pools rows 0, 1, 2 and leaves row 3 out (4 // 3 = 1).
    model = small_model(num_split=num_split).eval()
    model.base = nn.Identity()
    rows = torch.arange(4.0).view(1, 1, 4, 1).expand(1, 512, 4, 2)
    channels = 10 * torch.arange(512.0).view(1, 512, 1, 1)
    with torch.no_grad():
        pooled = model(rows + channels).pooled
    row_means = torch.tensor([1.5] + expected_stripes).view(1, -1, 1)
    expected = row_means + 10 * torch.arange(512.0).view(1, 1, 512)
    torch.testing.assert_close(pooled, expected)


@pytest.mark.parametrize("num_split, height", [(2, 128), (4, 128), (3, 96), (3, 128)])
def test_pools_equal_the_row_averages_of_the_layer4_map(num_split, height):
    model = small_model(num_split=num_split).eval()
    captured = []
    model.base.layer4.register_forward_hook(lambda module, inputs, output: captured.append(output))
    with torch.no_grad():
        pooled = model(torch.randn(2, 3, height, 64)).pooled
    feature_map = captured[0]
    stripe_height = feature_map.shape[2] // num_split
    torch.testing.assert_close(pooled[:, 0], feature_map.mean(dim=(2, 3)))
    for stripe in range(num_split):
        rows = feature_map[:, :, stripe_height * stripe: stripe_height * (stripe + 1)]
        torch.testing.assert_close(pooled[:, 1 + stripe], rows.mean(dim=(2, 3)))


def test_embedding_and_logits_follow_linear_bn_relu_dropout_linear():
    model = small_model(num_classes=5).eval()
    with torch.no_grad():
        model.feat_bn.running_mean.uniform_(-0.01, 0.01)
        model.feat_bn.running_var.uniform_(0.5, 2.0)
        model.feat_bn.weight.uniform_(0.5, 1.5)
        model.feat_bn.bias.uniform_(-0.01, 0.01)
        output = model(torch.randn(3, 3, 64, 32))
        bn = model.feat_bn
        projected = F.linear(output.pooled[:, 0], model.feat.weight)
        normalised = (projected - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
        expected_embedding = normalised.clamp(min=0)
        expected_logits = expected_embedding @ model.classifier.weight.t() + model.classifier.bias
    torch.testing.assert_close(output.embedding, expected_embedding)
    torch.testing.assert_close(output.logits, expected_logits)
    assert (output.embedding == 0).any() and (output.embedding > 0).any()


def test_dropout_acts_on_the_classifier_input_in_training():
    model = small_model(num_classes=5, dropout=0.5).train()
    images = torch.randn(4, 3, 64, 32)
    torch.manual_seed(1)
    first = model(images).logits
    torch.manual_seed(2)
    second = model(images).logits
    assert not torch.allclose(first, second)


def test_no_classes_means_no_classifier_and_no_logits():
    model = small_model(num_classes=0).eval()
    with torch.no_grad():
        output = model(torch.randn(2, 3, 64, 32))
    assert output.logits is None
    assert model.classifier is None


def test_new_layers_are_initialised_as_the_spec_says():
    model = small_model(num_features=2048, num_classes=300)
    for weight in (model.feat.weight, model.classifier.weight):
        assert weight.std().item() == pytest.approx(0.001, rel=0.03)
        assert abs(weight.mean().item()) < 1e-5
    assert model.feat.bias is None
    assert torch.equal(model.feat_bn.weight, torch.ones(2048))
    assert torch.equal(model.feat_bn.bias, torch.zeros(2048))
    assert torch.equal(model.classifier.bias, torch.zeros(300))


def test_base_and_new_parameters_split_the_model():
    model = small_model(num_classes=5)
    base = {id(parameter) for parameter in model.base_parameters()}
    new = {id(parameter) for parameter in model.new_parameters()}
    head = (model.feat.weight, model.feat_bn.weight, model.feat_bn.bias, model.classifier.weight,
            model.classifier.bias)
    expected_new = {id(parameter) for parameter in head}
    assert new == expected_new
    assert base.isdisjoint(new)
    assert base | new == {id(parameter) for parameter in model.parameters()}


def test_feature_map_height_of_the_paper_sizes():
    assert [feature_map_height(height) for height in (256, 128, 64, 32, 1)] == [8, 4, 2, 1, 1]


@pytest.mark.parametrize("arch, heights", [("resnet18", [31, 33, 50, 100, 127, 256]), ("resnet50", [33, 99])])
def test_feature_map_height_matches_a_real_forward(arch, heights):
    model = small_model(arch).eval()
    with torch.no_grad():
        for height in heights:
            assert model.base(torch.randn(1, 3, height, 32)).shape[2] == feature_map_height(height), height


def test_feature_map_height_rejects_an_empty_input():
    with pytest.raises(UserError, match="--height 0"):
        feature_map_height(0)


def test_check_num_split_accepts_divisors_of_the_map_height():
    for num_split in (1, 2, 4, 8):
        check_num_split(256, num_split)


@pytest.mark.parametrize("height, num_split, message", [
    (256, 3, "--num-split 3 does not divide the feature map height 8 of a 256-pixel input; "
             "use a divisor of 8"),
    (256, 16, "--num-split 16 does not divide the feature map height 8"),
    (64, 4, "--num-split 4 does not divide the feature map height 2 of a 64-pixel input"),
    (256, 0, "--num-split 0 must be at least 1"),
])
def test_check_num_split_rejects_the_rest(height, num_split, message):
    with pytest.raises(UserError) as raised:
        check_num_split(height, num_split)
    assert str(raised.value).startswith(message)


def test_create_rejects_a_num_split_below_one():
    with pytest.raises(UserError, match="--num-split 0"):
        small_model(num_split=0)


def test_forward_refuses_more_stripes_than_map_rows():
    model = small_model(num_split=3).eval()
    with pytest.raises(ValueError, match="height 1 cannot hold 3 stripes"):
        model(torch.randn(2, 3, 32, 32))


def refuse_download(weights, *args, **kwargs):
    raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")


def test_pretrained_path_loads_a_torchvision_state_dict(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", refuse_download)
    torch.manual_seed(5)
    source = torchvision.models.resnet18()
    path = tmp_path / "resnet18.pth"
    torch.save(source.state_dict(), path)
    model = models.create("resnet18", pretrained=True, pretrained_path=str(path))
    loaded = model.base.state_dict()
    assert set(loaded) == {key for key in source.state_dict() if not key.startswith("fc.")}
    for key, value in loaded.items():
        assert torch.equal(value, source.state_dict()[key]), key


def test_pretrained_path_errors_name_the_file(tmp_path):
    missing = tmp_path / "absent.pth"
    with pytest.raises(UserError, match=re.escape(f"--pretrained-path {missing}: no such file")):
        models.create("resnet18", pretrained_path=str(missing))
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=re.escape(f"--pretrained-path {garbage}: cannot read a state dict")):
        models.create("resnet18", pretrained_path=str(garbage))
    other_arch = tmp_path / "resnet34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), other_arch)
    with pytest.raises(UserError) as raised:
        models.create("resnet18", pretrained_path=str(other_arch))
    expected = f"--pretrained-path {other_arch} does not match a torchvision ResNet trunk"
    assert str(raised.value).startswith(expected)
    assert "unexpected keys (e.g. layer1.2." in str(raised.value)


def test_imagenet_weights_come_from_torchvision_v1(monkeypatch):
    torch.manual_seed(6)
    source = torchvision.models.resnet18()
    requested = []

    def fake_download(weights, *args, **kwargs):
        requested.append(weights)
        return source.state_dict()

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", fake_download)
    model = models.create("resnet18", pretrained=True)
    assert requested == [torchvision.models.ResNet18_Weights.IMAGENET1K_V1]
    assert torch.equal(model.base.layer4[1].conv2.weight, source.layer4[1].conv2.weight)


def test_offline_imagenet_weights_give_a_user_error(monkeypatch):
    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", refuse_download)
    with pytest.raises(UserError) as raised:
        models.create("resnet50", pretrained=True)
    message = str(raised.value)
    assert message.startswith("could not load ImageNet weights for resnet50 (URLError: <urlopen error")
    assert message.endswith("); pass --no-pretrained to train from scratch or --pretrained-path FILE with a "
                            "torchvision state dict")


class ConcatenatingGather:
    """Stand-in for DataParallel's CUDA-only Gather: concatenates CPU tensors along ``dim``."""

    @staticmethod
    def apply(target_device, dim, *tensors):
        return torch.cat(tensors, dim=dim)


@pytest.mark.parametrize("num_classes", [0, 5])
def test_dataparallel_gather_keeps_the_output_structure(monkeypatch, num_classes):
    monkeypatch.setattr(scatter_gather, "Gather", ConcatenatingGather)
    model = small_model(num_classes=num_classes).eval()
    with torch.no_grad():
        replicas = [model(torch.randn(2, 3, 64, 32)), model(torch.randn(3, 3, 64, 32))]
    gathered = scatter_gather.gather(replicas, "cpu")
    assert isinstance(gathered, ReIDOutput)
    torch.testing.assert_close(gathered.pooled, torch.cat([replica.pooled for replica in replicas]))
    assert gathered.embedding.shape == (5, 32)
    assert (gathered.logits is None) == (num_classes == 0)
    if num_classes:
        assert gathered.logits.shape == (5, 5)
