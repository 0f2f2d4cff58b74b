"""Person re-ID datasets: Market-1501, DukeMTMC-reID, MSMT17, CUHK03-NP and the two synthetic demo domains.

Each dataset is built by :func:`create` from its folder ``<data_dir>/<name>`` and exposes ``trainval``,
``query`` and ``gallery`` as lists of ``(fname, pid, camid)`` (see :class:`ReIDDataset`).
"""

from __future__ import annotations

from typing import Any

from reid.datasets.base import ReIDDataset
from reid.datasets.cuhk03 import CUHK03
from reid.datasets.dukemtmc import DukeMTMC
from reid.datasets.market1501 import Market1501
from reid.datasets.msmt17 import MSMT17
from reid.utils.errors import UserError

__all__ = ["ReIDDataset", "create", "names"]

_REAL_DATASETS = {"market1501": Market1501, "dukemtmc": DukeMTMC, "msmt17": MSMT17, "cuhk03": CUHK03}
_SYNTHETIC_DOMAINS = ("synth_a", "synth_b")


def names() -> list[str]:
    """The dataset names :func:`create` accepts."""
    return [*_REAL_DATASETS, *_SYNTHETIC_DOMAINS]


def create(name: str, root: str, *, verbose: bool = True, **kwargs: Any) -> ReIDDataset:
    """Load a dataset by name.

    Parameters
    ----------
    name : str
        One of :func:`names`:

        - ``market1501``, ``dukemtmc``: Market-1501, DukeMTMC-reID (no options).
        - ``msmt17``: option ``combine_val=True`` trains on list_train + list_val (default: list_train
          alone, as the authors' released code).
        - ``cuhk03``: CUHK03-NP; option ``labeled=False`` reads the detected boxes, True the hand-drawn ones.
        - ``synth_a``, ``synth_b``: the synthetic domains, generated into ``root`` on first use; options
          ``num_train_ids``, ``num_test_ids``, ``num_cameras``, ``images_per_camera``, ``seed``, ``shift``
          of :func:`reid.datasets.synthetic.generate`.
    root : str
        The dataset folder, ``<data_dir>/<name>`` by convention.
    verbose : bool
        Print the subset table (and the generation line of a synthetic domain).

    Returns
    -------
    ReIDDataset

    Raises
    ------
    UserError
        For an unknown name or a folder that does not hold the dataset.
    """
    if name in _REAL_DATASETS:
        return _REAL_DATASETS[name](root, verbose=verbose, **kwargs)
    if name in _SYNTHETIC_DOMAINS:
        # Imported here so that `python -m reid.datasets.synthetic` does not find the module already loaded.
        from reid.datasets.synthetic import SyntheticDataset

        return SyntheticDataset(root, domain=name, verbose=verbose, **kwargs)
    raise UserError(f"unknown dataset {name!r}: expected one of {', '.join(names())}")
