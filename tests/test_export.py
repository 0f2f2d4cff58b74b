"""python -m reid.export: an ONNX graph with a dynamic batch whose output, run by onnxruntime, is the
evaluation feature (flip-sum and L2 normalisation inside) to within 1e-4 of PyTorch's."""
import numpy as np
import onnx
import onnxruntime
import pytest
import torch
import torch.nn.functional as F
from conftest import write_small_checkpoint

from reid import export, models
from reid.utils.runtime import run_main
from reid.utils.serialization import load_checkpoint, load_model_weights
from tests.released_checkpoint import write_released_checkpoint

pytestmark = pytest.mark.slow

AGREEMENT = 1e-4


def evaluation_feature(model, images):
    """Written out here rather than taken from reid: pooled features of the images and of their mirror
    images, added, concatenated, L2-normalised."""
    with torch.no_grad():
        pooled = model(images).pooled + model(images.flip(3)).pooled
    return F.normalize(pooled.flatten(1), dim=1).numpy()


def onnx_features(fpath, images):
    session = onnxruntime.InferenceSession(str(fpath), providers=["CPUExecutionProvider"])
    return session.run(["features"], {"images": images.numpy()})[0]


def test_exported_small_model_agrees_with_pytorch(tmp_path, capsys):
    model = write_small_checkpoint(tmp_path)
    out = tmp_path / "model.onnx"

    assert run_main(export.main, ["--resume", str(tmp_path), "--out", str(out)]) == 0

    graph = onnx.load(str(out)).graph
    (image_input,) = graph.input
    batch, channels, height, width = image_input.type.tensor_type.shape.dim
    assert batch.dim_param and (channels.dim_value, height.dim_value, width.dim_value) == (3, 64, 32)
    generator = torch.Generator().manual_seed(1)
    for size in (1, 5):
        images = torch.randn(size, 3, 64, 32, generator=generator)
        exported = onnx_features(out, images)
        assert exported.shape == (size, 3 * 512)
        assert np.abs(exported - evaluation_feature(model, images)).max() <= AGREEMENT
    assert "max abs difference" in capsys.readouterr().out


def test_exported_released_model_agrees_with_pytorch(tmp_path):
    """The authors' layout (no config: ResNet-50, two stripes), exported at a small input size."""
    released = tmp_path / "market1501_trained.pth.tar"
    write_released_checkpoint(released, 751)
    out = tmp_path / "released.onnx"

    assert run_main(export.main, ["--resume", str(released), "--out", str(out), "--height", "64",
                                  "--width", "32"]) == 0

    model = models.create("resnet50", num_split=2, num_features=2048, pretrained=False)
    load_model_weights(model, load_checkpoint(str(released))["state_dict"], str(released))
    images = torch.randn(2, 3, 64, 32, generator=torch.Generator().manual_seed(2))
    exported = onnx_features(out, images)
    assert exported.shape == (2, 6144)
    assert np.abs(exported - evaluation_feature(model.eval(), images)).max() <= AGREEMENT


def test_contradicting_option_stops_before_exporting(tmp_path, capsys):
    write_small_checkpoint(tmp_path)
    status = run_main(export.main, ["--resume", str(tmp_path), "--out", str(tmp_path / "m.onnx"), "-a", "resnet34"])
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert status == 2 and lines == [f"error: {tmp_path}: checkpoint was trained with -a/--arch resnet18, this run "
                                     "asks for resnet34"]
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.parametrize("argv", [["--out", "m.onnx"], ["--resume", "x"]])
def test_missing_options_are_one_line(argv, capsys):
    with pytest.raises(SystemExit) as exit_info:
        export.parse_args(argv)
    assert exit_info.value.code == 2 and capsys.readouterr().err.startswith("error: ")
