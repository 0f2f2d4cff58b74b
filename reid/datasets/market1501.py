"""Market-1501 (Zheng et al., "Scalable Person Re-identification: A Benchmark", ICCV 2015)."""

from __future__ import annotations

import re

from reid.datasets.base import ReIDDataset, find_market_style_layout, load_market_style


class Market1501(ReIDDataset):
    """Market-1501: 1,501 identities seen by 6 cameras at Tsinghua University.

    Statistics (junk images, pid -1, dropped):

    ========  =====  ========
    subset    # ids  # images
    ========  =====  ========
    trainval    751    12,936
    query       750     3,368
    gallery     751    15,913
    ========  =====  ========

    The gallery ids are the 750 test identities plus the distractor pid 0 (``0000_*``), kept as
    never-matching images. File names read ``PPPP_cCsS_FFFFFF_NN.jpg``: pid, camera, sequence, frame,
    box index (``0002_c1s1_000451_03.jpg``; junk ``-1_c1s1_000401_03.jpg``).

    Parameters
    ----------
    root : str
        ``<data_dir>/market1501``, holding ``bounding_box_train/``, ``bounding_box_test/`` and ``query/``
        either directly or inside ``Market-1501-v15.09.15/`` (the folder the official archive extracts to).
    verbose : bool
        Print the subset table once loaded.
    """

    name = "market1501"
    archive_folder = "Market-1501-v15.09.15"
    name_pattern = re.compile(r"(?P<pid>-1|\d+)_c(?P<cam>[1-9]\d*)s\d+_\d+_\d+")
    name_format = "PPPP_cCsS_FFFFFF_NN.jpg (0002_c1s1_000451_03.jpg)"

    def __init__(self, root: str, *, verbose: bool = True) -> None:
        images_dir = find_market_style_layout(root, "Market-1501", ("", self.archive_folder))
        trainval, query, gallery = load_market_style(images_dir, self.name_pattern, self.name_format)
        super().__init__(root, images_dir, trainval, query, gallery, verbose=verbose)
