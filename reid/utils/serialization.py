"""One checkpoint format for the three scripts: atomic writes and tolerant loading that runs nothing.

A checkpoint is a dict with ``state_dict`` plus run state (``epoch``, ``best_top1`` and, for the adaptation
scripts, the optimiser, the frozen eps, RNG states...). Every file the authors' release could have written loads
too: PyTorch 0.4/1.0's legacy format with ``module.`` prefixes, classifier weights and numpy scalars beside the
weights, from PyTorch 0.4.0 (no BatchNorm ``num_batches_tracked`` buffers) and from Python 2 (pickled byte
strings, read as latin1). Every file is read by the weights-only unpickler (:mod:`reid.utils.weights_only`).
"""
from __future__ import annotations

import os
import shutil
from typing import Any

import torch
from torch import nn

from reid.utils.errors import UserError, first_line
from reid.utils.osutils import write_atomically
from reid.utils.records import BEST_MODEL
from reid.utils.weights_only import load_weights_only

BATCHES_TRACKED = "num_batches_tracked"


def save_checkpoint(state: dict, fpath: str, is_best: bool = False, best_name: str = BEST_MODEL) -> None:
    """Write ``state`` to ``fpath`` atomically (temporary file in the same folder, fsync, rename), and copy it
    to ``best_name`` beside it when ``is_best``. A process killed mid-save leaves the previous file intact."""
    folder = os.path.dirname(os.path.abspath(fpath))
    os.makedirs(folder, exist_ok=True)
    write_atomically(fpath, lambda tmp: _save(state, tmp))
    if is_best:
        write_atomically(os.path.join(folder, best_name), lambda tmp: shutil.copyfile(fpath, tmp))


def _save(state: dict, fpath: str) -> None:
    with open(fpath, "wb") as stream:
        torch.save(state, stream)


def load_checkpoint(fpath: str) -> dict[str, Any]:
    """Load a checkpoint on the CPU with :func:`reid.utils.weights_only.load_weights_only`: weights, numpy
    scalars and containers, nothing that runs code unless the user trusts the file."""
    if not os.path.isfile(fpath):
        raise UserError(f"{fpath}: checkpoint not found")
    try:
        checkpoint = load_weights_only(fpath)
    except UserError:
        raise
    except Exception as exc:  # torch.load fails in many ways on a file that is not a checkpoint
        raise UserError(f"{fpath}: not a readable checkpoint ({first_line(exc)})") from exc
    if isinstance(checkpoint, dict) and "state_dict" not in checkpoint and _is_state_dict(checkpoint):
        checkpoint = {"state_dict": checkpoint}
    if not isinstance(checkpoint, dict) or not _is_state_dict(checkpoint.get("state_dict")):
        raise UserError(f"{fpath}: not a checkpoint (expected a dict with a 'state_dict' of tensors)")
    return checkpoint


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(torch.is_tensor(v) for v in obj.values())


def strip_module_prefix(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove the ``module.`` prefix that DataParallel/DDP put on parameter names."""
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in state_dict.items()}


def is_classifier_key(key: str) -> bool:
    """Whether ``key`` belongs to an identity classifier, whatever the head's name (``classifier``, the
    authors' ``classifier_x2``...): the released loader drops every such key."""
    return "classifier" in key


def load_model_weights(model: nn.Module, state_dict: dict[str, torch.Tensor], source: str,
                       drop_classifier: bool = True) -> None:
    """Copy ``state_dict`` into ``model`` (unwrapped of DataParallel/DDP).

    ``module.`` prefixes are stripped. Every classifier key (:func:`is_classifier_key`) is dropped when
    ``drop_classifier`` or when the model has no head of that name, as the authors' loader does; so are the unused
    ImageNet ``fc`` of the backbone that open-reid era checkpoints carry (``base.fc.*``) and ``feat.bias``:
    open-reid's embedding layer had a bias, which the BatchNorm right after it cancels in training (the
    embedding is not part of the evaluation feature). A file without any BatchNorm ``num_batches_tracked``
    buffer (PyTorch 0.4.0 had none) gets them as 0, as PyTorch itself fills them. Any other missing, unexpected
    or mis-shaped key raises UserError naming ``source``: the checkpoint was made for another architecture or
    ``--num-split``/``--features``.
    """
    target = model.module if hasattr(model, "module") else model
    weights = {k: v for k, v in strip_module_prefix(state_dict).items()
               if not k.startswith("base.fc.") and k != "feat.bias"}
    own = target.state_dict()
    if not any(k.endswith(BATCHES_TRACKED) for k in weights):
        weights.update({k: torch.zeros_like(v) for k, v in own.items() if k.endswith(BATCHES_TRACKED)})
    # A head the model lacks (another name, or no classifier at all) is never an error.
    weights = {k: v for k, v in weights.items()
               if not is_classifier_key(k) or (k in own and not drop_classifier)}
    missing = [k for k in own if k not in weights and not (is_classifier_key(k) and drop_classifier)]
    unexpected = [k for k in weights if k not in own]
    mismatched = [k for k, v in weights.items() if k in own and v.shape != own[k].shape]
    if missing or unexpected or mismatched:
        detail = "; ".join(f"{label} {keys[:3]}" for label, keys in
                           (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatched))
                           if keys)
        raise UserError(f"{source}: weights do not fit this model ({detail}); check -a/--arch, --features "
                        "and that the checkpoint comes from this project or the authors' release")
    target.load_state_dict(weights, strict=False)
