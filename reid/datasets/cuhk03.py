"""CUHK03 (Li et al., "DeepReID: Deep Filter Pairing Neural Network for Person Re-identification",
CVPR 2014) in the new 767/700 protocol of Zhong et al. ("Re-ranking Person Re-identification with
k-reciprocal Encoding", CVPR 2017), read from its ``cuhk03-np`` release."""

from __future__ import annotations

import os
import re

from reid.datasets.base import ReIDDataset, find_market_style_layout, load_market_style


class CUHK03(ReIDDataset):
    """CUHK03-NP: 1,467 identities, each seen by the 2 cameras of one camera pair.

    Statistics:

    ========  =====  =================  =================
    subset    # ids  # images detected  # images labeled
    ========  =====  =================  =================
    trainval    767              7,365              7,368
    query       700              1,400              1,400
    gallery     700              5,332              5,328
    ========  =====  =================  =================

    Boxes come either from a pedestrian detector (``detected``, the default) or drawn by hand
    (``labeled``). File names read ``PPPP_cC_N.png``: pid, camera, image index (``0001_c1_1.png``).

    Parameters
    ----------
    root : str
        ``<data_dir>/cuhk03``, holding ``cuhk03-np/detected/`` and/or ``cuhk03-np/labeled/`` (or
        ``detected/``, ``labeled/`` directly), each with ``bounding_box_train/``, ``bounding_box_test/``
        and ``query/``.
    labeled : bool
        Read the hand-drawn boxes instead of the detected ones.
    verbose : bool
        Print the subset table once loaded.
    """

    name = "cuhk03"
    release_folder = "cuhk03-np"
    name_pattern = re.compile(r"(?P<pid>-1|\d+)_c(?P<cam>[1-9]\d*)_\d+")
    name_format = "PPPP_cC_N.png (0001_c1_1.png)"

    def __init__(self, root: str, *, labeled: bool = False, verbose: bool = True) -> None:
        boxes = "labeled" if labeled else "detected"
        nestings = (os.path.join(self.release_folder, boxes), boxes)
        images_dir = find_market_style_layout(root, f"CUHK03-NP ({boxes})", nestings)
        trainval, query, gallery = load_market_style(images_dir, self.name_pattern, self.name_format)
        self.labeled = labeled
        super().__init__(root, images_dir, trainval, query, gallery, verbose=verbose)
