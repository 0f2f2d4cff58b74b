"""Export a trained model to ONNX.

    python -m reid.export --resume logs/market2duke --out model.onnx

The graph's input ``images`` is a float32 batch (B, 3, H, W) with a dynamic batch size B and the model's fixed
input size H x W (the checkpoint's, see below): RGB images resized to H x W, scaled to [0, 1] and normalised
with ImageNet's mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225), as the test transform does. Its
output ``features`` (B, (S+1) C) is the evaluation feature, and the flip-sum and the L2 normalisation are
**inside the graph**: the pooled features of each image and of its mirror image are added, concatenated and
L2-normalised, so the output is what evaluation and ``reid.extract`` compute (cosine similarity = dot product).

The model is the ``--resume`` checkpoint, this project's or the authors' release; its architecture, input size,
stripes and embedding width are read from the checkpoint's recorded config unless given (the authors' files
record none: then the paper's ResNet-50 at 256x128). After writing, the graph is run by onnxruntime, when
installed, on a random batch and compared with PyTorch; the largest absolute difference is printed.
Uses the torch.export-based exporter (torch >= 2.5, with the onnx and onnxscript packages).
"""
from __future__ import annotations

import argparse
import inspect

import numpy as np
import torch
from torch import nn

from reid.arguments import add_trained_model_args
from reid.experiment import load_trained_model
from reid.feature_extraction import eval_features, flip_sum
from reid.utils.cli import ArgumentParser, add
from reid.utils.errors import UserError
from reid.utils.osutils import write_atomically
from reid.utils.runtime import run_main

INPUT_NAME, OUTPUT_NAME = "images", "features"
_CHECK_BATCH = 3


class EvaluationFeature(nn.Module):
    """The evaluation feature of a batch of normalised images: flip-summed, concatenated, L2-normalised."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return eval_features(flip_sum(self.model, images))


def export_onnx(model: nn.Module, height: int, width: int, fpath: str) -> None:
    """Write the evaluation feature of ``model`` (eval mode, CPU) as an ONNX graph with a dynamic batch size."""
    if "dynamo" not in inspect.signature(torch.onnx.export).parameters:
        raise UserError(f"reid.export needs torch >= 2.5 for its ONNX exporter (found {torch.__version__})")
    example = torch.zeros(2, 3, height, width)
    try:
        program = torch.onnx.export(EvaluationFeature(model).eval(), (example,), input_names=[INPUT_NAME],
                                    output_names=[OUTPUT_NAME], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                    dynamo=True, verbose=False)
    except ImportError as exc:
        raise UserError(f"reid.export needs the onnx and onnxscript packages ({exc}); pip install onnx "
                        "onnxscript") from exc
    write_atomically(fpath, program.save)


def onnxruntime_difference(model: nn.Module, height: int, width: int, fpath: str, seed: int = 0) -> float | None:
    """Largest absolute difference between onnxruntime's output for ``fpath`` and PyTorch's on a random
    batch; None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    images = torch.randn(_CHECK_BATCH, 3, height, width, generator=torch.Generator().manual_seed(seed))
    session = onnxruntime.InferenceSession(fpath, providers=["CPUExecutionProvider"])
    (exported,) = session.run([OUTPUT_NAME], {INPUT_NAME: images.numpy()})
    with torch.no_grad():
        expected = EvaluationFeature(model).eval()(images).numpy()
    return float(np.abs(exported - expected).max())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    model = load_trained_model(args)
    export_onnx(model, args.height, args.width, args.out)
    print(f"{args.out}: {args.arch}, input (batch, 3, {args.height}, {args.width}) -> evaluation feature "
          f"(batch, {(args.num_split + 1) * model.out_channels}), flip-sum and L2 normalisation inside")
    difference = onnxruntime_difference(model, args.height, args.width, args.out)
    if difference is not None:
        print(f"onnxruntime agrees with PyTorch on a batch of {_CHECK_BATCH}: max abs difference {difference:.2e}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(description=__doc__)
    add_trained_model_args(parser)
    add(parser, "--out", type=str, required=True, help="ONNX file to write")
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(run_main(main))
