"""Person re-ID datasets: Market-1501, DukeMTMC-reID, MSMT17, CUHK03-NP, the two synthetic demo domains, and
one's own unlabelled crops (``folder:PATH`` or ``list:FILE``, :mod:`reid.datasets.folder`).

Each dataset is built by :func:`create` from its folder ``<data_dir>/<name>`` (a spec from its own path) and
exposes ``trainval``, ``query`` and ``gallery`` as lists of ``(fname, pid, camid)`` (see :class:`ReIDDataset`).
"""

from __future__ import annotations

import argparse
from typing import Any

from reid.datasets.base import ReIDDataset
from reid.datasets.cuhk03 import CUHK03
from reid.datasets.dukemtmc import DukeMTMC
from reid.datasets.folder import UnlabelledImages, is_spec, parse_spec
from reid.datasets.market1501 import Market1501
from reid.datasets.msmt17 import MSMT17
from reid.utils.errors import UserError

__all__ = ["ReIDDataset", "create", "dataset_arg", "names"]

_REAL_DATASETS = {"market1501": Market1501, "dukemtmc": DukeMTMC, "msmt17": MSMT17, "cuhk03": CUHK03}
_SYNTHETIC_DOMAINS = ("synth_a", "synth_b")


def names() -> list[str]:
    """The dataset names :func:`create` accepts."""
    return [*_REAL_DATASETS, *_SYNTHETIC_DOMAINS]


def dataset_arg(text: str) -> str:
    """argparse ``type=`` of a target: one of :func:`names`, or a spec of unlabelled crops (``folder:PATH``,
    ``list:FILE``) whose path exists and is of its kind; anything else is one line naming what was expected."""
    if text in names():
        return text
    if is_spec(text):
        try:
            parse_spec(text)
        except UserError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc
        return text
    raise argparse.ArgumentTypeError(f"{text!r}: expected one of {', '.join(names())}, or folder:PATH (a folder of "
                                     "person crops) or list:FILE (a text file of image paths)")


def create(name: str, root: str, *, verbose: bool = True, **kwargs: Any) -> ReIDDataset:
    """Load a dataset by name, or unlabelled crops by spec.

    Parameters
    ----------
    name : str
        One of :func:`names`, or a spec:

        - ``market1501``, ``dukemtmc``: Market-1501, DukeMTMC-reID (no options).
        - ``msmt17``: option ``combine_val=True`` trains on list_train + list_val (default: list_train
          alone, as the authors' released code).
        - ``cuhk03``: CUHK03-NP; option ``labeled=False`` reads the detected boxes, True the hand-drawn ones.
        - ``synth_a``, ``synth_b``: the synthetic domains, generated into ``root`` on first use; options
          ``num_train_ids``, ``num_test_ids``, ``num_cameras``, ``images_per_camera``, ``seed``, ``shift``
          of :func:`reid.datasets.synthetic.generate`.
        - ``folder:PATH``, ``list:FILE``: person crops without labels
          (:class:`reid.datasets.folder.UnlabelledImages`); option ``test_dir``, a labelled test set in the
          Market-1501 layout to evaluate on.
    root : str
        The dataset folder, ``<data_dir>/<name>`` by convention; ignored for a spec, which holds its path.
    verbose : bool
        Print the subset table (and the generation line of a synthetic domain).

    Returns
    -------
    ReIDDataset

    Raises
    ------
    UserError
        For an unknown name or a folder that does not hold the dataset; ``test_dir`` given for a named dataset,
        which has its own query and gallery.
    """
    test_dir = kwargs.pop("test_dir", None)
    if is_spec(name):
        return UnlabelledImages(name, test_dir=test_dir, verbose=verbose, **kwargs)
    if test_dir is not None:
        raise UserError(f"test set {test_dir}: only a folder: or list: target takes one; {name} is evaluated on "
                        "its own query and gallery")
    if name in _REAL_DATASETS:
        return _REAL_DATASETS[name](root, verbose=verbose, **kwargs)
    if name in _SYNTHETIC_DOMAINS:
        # Imported here so that `python -m reid.datasets.synthetic` does not find the module already loaded.
        from reid.datasets.synthetic import SyntheticDataset

        return SyntheticDataset(root, domain=name, verbose=verbose, **kwargs)
    raise UserError(f"unknown dataset {name!r}: expected one of {', '.join(names())}")
