"""The training-throughput benchmark's true-fp32 mode switches TF32 off for its block only."""
import torch

from benchmarks.train_throughput import tf32_off


def flags():
    return torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32


def test_tf32_is_off_inside_the_true_fp32_block_and_restored_after():
    before = flags()
    with tf32_off(True):
        assert flags() == (False, False)
    assert flags() == before
    with tf32_off(False):
        assert flags() == before  # the other modes run PyTorch's defaults untouched

