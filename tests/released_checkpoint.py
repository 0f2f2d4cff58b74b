"""Checkpoints in the exact layout of the authors' released source models (market1501_trained.pth.tar,
dukemtmc_trained.pth.tar): a ResNet-50 trained with DataParallel, saved by PyTorch 0.4/1.0 in its legacy
(pre-zip) format, from Python 3 or Python 2."""
import pickle
import struct
import types

import numpy as np
import torch

from reid import models


class Python2Pickler(pickle._Pickler):
    """Pickles as Python 2 did: every ``str`` and ``bytes`` as a Python 2 byte string (``SHORT_BINSTRING`` /
    ``BINSTRING``, which Python 3 decodes with the ``encoding`` it is given), numpy's globals under their old
    ``numpy.core`` module. A numpy scalar's raw bytes then need latin1 to load."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_python2_string(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_python2_string
    dispatch[bytes] = save_python2_string

    def save_global(self, obj, name=None):
        module = obj.__module__.replace("numpy._core", "numpy.core")
        self.write(pickle.GLOBAL + f"{module}\n{name or obj.__qualname__}\n".encode("ascii"))
        self.memoize(obj)


PYTHON2_PICKLE = types.ModuleType("python2_pickle")
PYTHON2_PICKLE.Pickler = Python2Pickler
PYTHON2_PICKLE.dump = lambda obj, stream, protocol: Python2Pickler(stream, protocol).dump(obj)


def save_as_released(obj, path, python: int = 3) -> None:
    """``torch.save`` as PyTorch 0.4/1.0 wrote files: the legacy format, pickle protocol 2, from ``python``."""
    options = {"pickle_module": PYTHON2_PICKLE} if python == 2 else {}
    torch.save(obj, str(path), pickle_protocol=2, _use_new_zipfile_serialization=False, **options)


def write_released_checkpoint(path, num_classes: int, seed: int = 0, pytorch: str = "0.4.1", python: int = 3) -> dict:
    """Write ``{state_dict, epoch, best_top1}`` as the authors did and return the state dict written.

    The state dict holds ``module.base.*`` with the ImageNet ``base.fc.*``, ``module.feat.weight`` (no bias),
    ``module.feat_bn.*`` and the head ``module.classifier_x2.weight/bias``; ``best_top1`` is a numpy scalar.
    PyTorch 0.4.0 wrote no BatchNorm ``num_batches_tracked`` buffers (0.4.1 added them).
    """
    torch.manual_seed(seed)
    model = models.create("resnet50", num_split=2, num_features=2048, num_classes=0, pretrained=False)
    state = {f"module.{key}": value for key, value in model.state_dict().items()
             if pytorch != "0.4.0" or not key.endswith("num_batches_tracked")}
    state["module.base.fc.weight"] = torch.randn(1000, 2048) * 0.01
    state["module.base.fc.bias"] = torch.zeros(1000)
    state["module.classifier_x2.weight"] = torch.randn(num_classes, 2048) * 0.001
    state["module.classifier_x2.bias"] = torch.zeros(num_classes)
    save_as_released({"state_dict": state, "epoch": 150, "best_top1": np.float64(0.8080)}, path, python)
    return state
