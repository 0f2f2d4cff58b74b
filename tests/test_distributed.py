"""DDP training equal to one process on the whole batch (docs/algorithm.md, "BatchNorm groups and several
GPUs"): the gather of reid.utils.distributed and reid.trainers, the BatchNorm of the global batch and of groups
spanning ranks (reid.models.batchnorm).

Two gloo processes on the CPU (one spawn for the whole file) run every distributed case; the parent runs the
same computations in one process with plain BatchNorm on the concatenated batch and compares the numbers.
"""
from datetime import timedelta

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from reid import models
from reid.loss import TripletLoss
from reid.models import DistributedBatchNorm, ReIDOutput, convert_sync_batchnorm, group_batchnorm
from reid.trainers import gather_output, part_triplet_terms
from reid.utils.distributed import gather_batch

pytestmark = pytest.mark.slow

WORLD_SIZE = 2
TOLERANCE = 1e-5
NUM_INSTANCES = 4
# (layer class, kwargs, input shape of the whole batch, offset added to the input): an offset far from 0
# checks that the combined variance does not cancel.
BATCHNORM_CASES = {
    "2d": (nn.BatchNorm2d, {}, (8, 3, 4, 5), 3.0),
    "1d": (nn.BatchNorm1d, {"momentum": 0.3}, (8, 6), -20.0),
    "1d_sequence": (nn.BatchNorm1d, {"momentum": None}, (8, 4, 5), 0.0),
}
# Global batches of 16 = 4 identity blocks of 4; rank r trains on blocks 2r and 2r+1, as the identity sampler
# splits a global batch. Columns: global cluster, upper-stripe cluster, lower-stripe cluster.
TRAINING_LABELS = torch.tensor(
    [[0, 0, 0]] * 4 + [[1, 1, 2]] * 2 + [[1, 1, 3]] * 2 + [[2, 0, 4]] * 4 + [[3, 3, 4]] * 3 + [[3, 3, 5]]
)
# (model, variant) trained by the workers: "synced" gathers the features and synchronises BatchNorm,
# "local_loss" computes the loss on the rank's shard only, "plain_bn" keeps per-rank BatchNorm, "group<N>"
# gathers the features and normalises BatchNorm over groups of N images of the global batch of 16 (each rank
# holds 8: a group of 16 spans both ranks, 8 is one rank's share, 4 splits a share in two). The ResNet, slower,
# runs the synced variant only and for one step. Everything is float64: float32 rounding alone moves the
# ResNet's weights by about 4e-5 after one step at lr 0.1.
GROUP_VARIANTS = ("group16", "group8", "group4")
TRAINING_CASES = (("tiny", "synced"), ("tiny", "local_loss"), ("tiny", "plain_bn"), ("resnet18", "synced"),
                  *(("tiny", variant) for variant in GROUP_VARIANTS))
# With 4 ranks of 4 images: groups of 8 span ranks {0, 1} and {2, 3}; a group of 16 spans all four.
FOUR_RANK_VARIANTS = ("group8", "group16")


class TinyPartNet(nn.Module):
    """conv-BN2d-ReLU, SSG's global + 2 stripe average pools, Linear-BN1d-ReLU embedding."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.feat = nn.Linear(8, 16, bias=False)
        self.feat_bn = nn.BatchNorm1d(16)

    def forward(self, images):
        feature_map = torch.relu(self.bn(self.conv(images)))
        batch, channels = feature_map.shape[:2]
        stripes = feature_map.reshape(batch, channels, 2, -1).mean(dim=3).transpose(1, 2)
        pooled = torch.cat([feature_map.mean(dim=(2, 3)).unsqueeze(1), stripes], dim=1)
        return ReIDOutput(pooled, torch.relu(self.feat_bn(self.feat(pooled[:, 0]))), None)


def build_model(name):
    if name == "tiny":
        return TinyPartNet().double()
    return models.create("resnet18", num_split=2, num_features=32, pretrained=False).double()


# Per model: image shape and number of training steps.
MODEL_INPUTS = {"tiny": ((3, 8, 4), 2), "resnet18": ((3, 64, 16), 1)}


def make_setup():
    """Initial weights, inputs and output gradients shared by the workers and the one-process references."""
    torch.manual_seed(0)
    setup = {"gather_input": torch.randn(8, 5, dtype=torch.float64),
             "gather_weights": torch.randn(8, 5, dtype=torch.float64)}
    for case, (layer_class, kwargs, shape, offset) in BATCHNORM_CASES.items():
        layer = layer_class(shape[1], **kwargs).double()
        nn.init.uniform_(layer.weight, 0.5, 1.5)
        nn.init.uniform_(layer.bias, -0.5, 0.5)
        setup[f"bn_{case}_state"] = layer.state_dict()
        setup[f"bn_{case}_inputs"] = [torch.randn(shape, dtype=torch.float64) * 2 + offset for _ in range(2)]
        setup[f"bn_{case}_output_grads"] = [torch.randn(shape, dtype=torch.float64) for _ in range(2)]
    for name, (image_shape, steps) in MODEL_INPUTS.items():
        setup[f"{name}_state"] = build_model(name).state_dict()
        setup[f"{name}_batches"] = [torch.randn(16, *image_shape, dtype=torch.float64) for _ in range(steps)]
    return setup


def shard(tensor, rank, world_size=WORLD_SIZE):
    size = len(tensor) // world_size
    return tensor[rank * size:(rank + 1) * size]


def group_size(variant):
    return int(variant[len("group"):])


def run_batchnorm(layer, inputs, output_grads):
    """Two training passes of ``layer``: outputs, input and parameter gradients, final running stats."""
    record = {"outputs": [], "input_grads": [], "weight_grads": [], "bias_grads": []}
    for images, output_grad in zip(inputs, output_grads):
        images = images.clone().requires_grad_(True)
        output = layer(images)
        (output * output_grad).sum().backward()
        record["outputs"].append(output.detach())
        record["input_grads"].append(images.grad)
        record["weight_grads"].append(layer.weight.grad.clone())
        record["bias_grads"].append(layer.bias.grad.clone())
        layer.zero_grad()
    record["buffers"] = {name: buffer.clone() for name, buffer in layer.named_buffers()}
    return record


def train(model, batches, gather):
    """SGD steps (lr 0.1, momentum 0.9) of SSG's four block triplet terms; returns the final state (parameters
    and buffers)."""
    triplet = TripletLoss(margin=0.5, mining="block", num_instances=NUM_INSTANCES)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model.train()
    for images, labels in batches:
        output = model(images)
        if gather:
            output, labels = gather_output(output, labels)
        loss, _ = part_triplet_terms(triplet, output, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    module = model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
    return {name: value.detach().clone() for name, value in module.state_dict().items()}


def distributed_training(setup, name, variant, rank, world_size=WORLD_SIZE):
    model = build_model(name)
    model.load_state_dict(setup[f"{name}_state"])
    batches = [(shard(images, rank, world_size), shard(TRAINING_LABELS, rank, world_size))
               for images in setup[f"{name}_batches"]]
    if variant.startswith("group"):
        model = group_batchnorm(model, group_size(variant), rank_batch_size=len(batches[0][0]))
    elif variant != "plain_bn":
        model = convert_sync_batchnorm(model, "cpu")
    model = nn.parallel.DistributedDataParallel(model)
    return train(model, batches, gather=variant != "local_loss")


def worker_gather(setup, rank):
    full = setup["gather_input"]
    local = shard(full, rank).clone().requires_grad_(True)
    gathered = gather_batch(local)
    (gathered.pow(3) * setup["gather_weights"]).sum().backward()
    local_values = shard(full, rank)
    output = ReIDOutput(torch.stack([local_values, 2 * local_values], dim=1), local_values[:, :3],
                        local_values[:, 3:])
    gathered_output, gathered_labels = gather_output(output, torch.arange(4) + 10 * rank)
    return {"gathered": gathered.detach(), "local_grad": local.grad, "output": gathered_output,
            "labels": gathered_labels}


def worker_batchnorm(setup, rank):
    results = {}
    for case, (layer_class, kwargs, shape, _) in BATCHNORM_CASES.items():
        layer = layer_class(shape[1], **kwargs).double()
        layer.load_state_dict(setup[f"bn_{case}_state"])
        layer = convert_sync_batchnorm(layer, "cpu")
        inputs = [shard(images, rank) for images in setup[f"bn_{case}_inputs"]]
        output_grads = [shard(grad, rank) for grad in setup[f"bn_{case}_output_grads"]]
        results[case] = run_batchnorm(layer, inputs, output_grads)
        # Evaluation normalises with the running statistics, without any collective.
        results[case]["eval_output"] = layer.eval()(inputs[0]).detach()
    return results


def worker(rank, folder, world_size):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=120))
    try:
        setup = torch.load(f"{folder}/setup.pt", weights_only=True)
        if world_size == WORLD_SIZE:
            results = {"gather": worker_gather(setup, rank), "batchnorm": worker_batchnorm(setup, rank)}
            results["training"] = {case: distributed_training(setup, *case, rank) for case in TRAINING_CASES}
        else:
            results = {"training": {("tiny", variant): distributed_training(setup, "tiny", variant, rank, world_size)
                                    for variant in FOUR_RANK_VARIANTS}}
        torch.save(results, f"{folder}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn_ranks(tmp_path_factory, world_size):
    """The setup and the results of every rank of a ``world_size``-process gloo run."""
    folder = tmp_path_factory.mktemp(f"distributed{world_size}")
    setup = make_setup()
    torch.save(setup, folder / "setup.pt")
    mp.spawn(worker, args=(str(folder), world_size), nprocs=world_size, join=True)
    return setup, [torch.load(folder / f"rank{rank}.pt", weights_only=False) for rank in range(world_size)]


@pytest.fixture(scope="module")
def distributed(tmp_path_factory):
    return spawn_ranks(tmp_path_factory, WORLD_SIZE)


@pytest.fixture(scope="module")
def distributed_four(tmp_path_factory):
    return spawn_ranks(tmp_path_factory, 4)


def assert_close(actual, expected):
    torch.testing.assert_close(actual, expected, rtol=0, atol=TOLERANCE)


def max_weight_difference(first_state, second_state, weight_names):
    return max((first_state[key] - second_state[key]).abs().max().item() for key in weight_names)


def test_gather_batch_concatenates_in_rank_order_and_returns_world_size_times_the_local_gradient(distributed):
    setup, ranks = distributed
    full = setup["gather_input"]
    full_gradient = 3 * full.pow(2) * setup["gather_weights"]
    for rank, result in enumerate(ranks):
        assert_close(result["gather"]["gathered"], full)
        # Both ranks compute the same full-batch loss L: each local input receives W * dL/dx_local.
        assert_close(result["gather"]["local_grad"], WORLD_SIZE * shard(full_gradient, rank))


def test_gather_output_gathers_every_field_and_the_labels(distributed):
    setup, ranks = distributed
    full = setup["gather_input"]
    for result in ranks:
        output = result["gather"]["output"]
        assert_close(output.pooled, torch.stack([full, 2 * full], dim=1))
        assert_close(output.embedding, full[:, :3])
        assert_close(output.logits, full[:, 3:])
        assert result["gather"]["labels"].tolist() == [0, 1, 2, 3, 10, 11, 12, 13]


@pytest.mark.parametrize("case", list(BATCHNORM_CASES))
def test_distributed_batchnorm_equals_batchnorm_on_the_whole_batch(distributed, case):
    setup, ranks = distributed
    layer_class, kwargs, shape, _ = BATCHNORM_CASES[case]
    reference_layer = layer_class(shape[1], **kwargs).double()
    reference_layer.load_state_dict(setup[f"bn_{case}_state"])
    reference = run_batchnorm(reference_layer, setup[f"bn_{case}_inputs"], setup[f"bn_{case}_output_grads"])
    results = [result["batchnorm"][case] for result in ranks]
    for step in range(2):
        for key in ("outputs", "input_grads"):
            assert_close(torch.cat([result[key][step] for result in results]), reference[key][step])
        # Each rank holds its shard's share of the parameter gradient; DDP sums (averages) them.
        for key in ("weight_grads", "bias_grads"):
            assert_close(sum(result[key][step] for result in results), reference[key][step])
    for result in results:
        for name, buffer in reference["buffers"].items():
            assert_close(result["buffers"][name], buffer)
    reference_eval = reference_layer.eval()(setup[f"bn_{case}_inputs"][0]).detach()
    assert_close(torch.cat([result["eval_output"] for result in results]), reference_eval)


@pytest.fixture(scope="module")
def one_process(distributed):
    """Per model: the state after training in one process on the whole batches, and its parameter names."""
    setup, _ = distributed
    references = {}
    for name in MODEL_INPUTS:
        model = build_model(name)
        model.load_state_dict(setup[f"{name}_state"])
        weight_names = [weight_name for weight_name, _ in model.named_parameters()]
        batches = [(images, TRAINING_LABELS) for images in setup[f"{name}_batches"]]
        references[name] = train(model, batches, gather=False), weight_names
    return references


@pytest.mark.parametrize("name", list(MODEL_INPUTS))
def test_ddp_training_with_gathering_and_sync_bn_equals_one_process_on_the_whole_batch(
        distributed, one_process, name):
    setup, ranks = distributed
    reference, weight_names = one_process[name]
    assert max_weight_difference(reference, setup[f"{name}_state"], weight_names) > 1e-2, "no training step"
    for result in ranks:
        trained = result["training"][(name, "synced")]
        assert trained.keys() == reference.keys()
        for key, value in reference.items():
            assert_close(trained[key], value)


def grouped_reference(setup, variant):
    """One process training the tiny model on the whole batches with BatchNorm over groups."""
    model = group_batchnorm(build_model("tiny"), group_size(variant))
    model.load_state_dict(setup["tiny_state"])
    return train(model, [(images, TRAINING_LABELS) for images in setup["tiny_batches"]], gather=False)


def assert_matches_one_process(ranks, reference, variant):
    """Rank 0 holds the reference's parameters and buffers (DDP broadcasts its buffers: they are the
    checkpoint's); every rank holds its parameters."""
    weight_names = [name for name, _ in build_model("tiny").named_parameters()]
    for rank, result in enumerate(ranks):
        trained = result["training"][("tiny", variant)]
        for key in (reference if rank == 0 else weight_names):
            assert_close(trained[key], reference[key])


@pytest.mark.parametrize("variant", GROUP_VARIANTS)
def test_ddp_with_bn_groups_equals_one_process_with_groups(distributed, variant):
    setup, ranks = distributed
    reference = grouped_reference(setup, variant)
    assert_matches_one_process(ranks, reference, variant)
    # The grouping matters: plain BatchNorm over the whole batch trains other weights.
    plain = grouped_reference(setup, "group16")
    if variant != "group16":
        assert max_weight_difference(reference, plain, ["bn.weight", "conv.weight", "feat.weight"]) > 1e-4


@pytest.mark.parametrize("variant", FOUR_RANK_VARIANTS)
def test_four_ranks_with_groups_spanning_pairs_of_ranks_equal_one_process(distributed_four, variant):
    setup, ranks = distributed_four
    assert_matches_one_process(ranks, grouped_reference(setup, variant), variant)


@pytest.mark.parametrize("variant", ["local_loss", "plain_bn"])
def test_ddp_training_gives_other_weights_without_gathering_or_without_sync_bn(
        distributed, one_process, variant):
    _, ranks = distributed
    reference, weight_names = one_process["tiny"]
    for result in ranks:
        assert max_weight_difference(result["training"][("tiny", variant)], reference, weight_names) > 1e-3


def test_without_a_process_group_everything_is_the_identity_or_plain_batchnorm():
    torch.manual_seed(1)
    features = torch.randn(6, 4)
    assert gather_batch(features) is features
    output = ReIDOutput(torch.randn(6, 3, 4), features, None)
    labels = torch.arange(6)
    same_output, same_labels = gather_output(output, labels)
    assert same_output is output and same_labels is labels
    images = torch.randn(6, 4, 3, 3) + 2
    reference = nn.BatchNorm2d(4, momentum=None)
    converted = convert_sync_batchnorm(nn.BatchNorm2d(4, momentum=None), "cpu")
    for _ in range(2):
        assert_close(converted(images), reference(images))
    for name, buffer in reference.named_buffers():
        assert_close(dict(converted.named_buffers())[name], buffer)


def test_convert_sync_batchnorm_replaces_nested_layers_and_keeps_their_parameters_and_buffers():
    model = models.create("resnet18", num_split=2, num_features=32, pretrained=False)
    model.base.layer1[0].bn1.running_mean.fill_(0.25)
    weight = model.feat_bn.weight
    original_count = sum(isinstance(module, nn.BatchNorm2d) for module in model.modules()) + 1
    converted = convert_sync_batchnorm(model, "cpu")
    converted_layers = [module for module in converted.modules() if isinstance(module, DistributedBatchNorm)]
    assert len(converted_layers) == original_count == 21
    assert not any(isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)) for module in converted.modules())
    assert converted.feat_bn.weight is weight
    assert converted.base.layer1[0].bn1.running_mean.tolist() == [0.25] * 64


def test_convert_sync_batchnorm_on_cuda_uses_torch_syncbatchnorm():
    converted = convert_sync_batchnorm(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)), "cuda")
    assert isinstance(converted[1], nn.SyncBatchNorm)


def test_distributed_batchnorm_rejects_a_5d_input():
    with pytest.raises(ValueError, match="5-D"):
        DistributedBatchNorm(2)(torch.zeros(2, 2, 1, 1, 1))
