"""rho by the paper's rule, the figures of a grouping and the warnings of a degenerate one, on hand-built labels."""
import argparse
import json

import numpy as np
import pytest

from reid.cluster import (
    MARKET_IDENTITIES,
    MARKET_IMAGES,
    RELEASED_RHO,
    RHO_MULTIPLE,
    implied_images_per_identity,
    resolve_rho,
    rho_arg,
    rho_by_rule,
    same_identity_share,
)
from reid.grouping import cluster_sizes, grouping_stats, grouping_warnings, size_bins
from reid.utils.errors import UserError

NAMES = ["global", "upper", "lower"]


def test_the_multiple_is_the_released_rho_over_market_share_of_same_identity_pairs():
    market_share = same_identity_share(MARKET_IMAGES / MARKET_IDENTITIES, MARKET_IMAGES)
    assert market_share == pytest.approx(1.2544e-3, rel=1e-4)
    assert round(RELEASED_RHO / market_share, 2) == RHO_MULTIPLE == 1.28


@pytest.mark.parametrize("images_per_identity, num_images, expected", [
    (12_936 / 751, 12_936, 1.6e-3),  # Market-1501: the released value, to rounding (1.6056e-3)
    (1_376 / 80, 1_376, 1.5e-2),  # synth_b: run.sh's profile (1.5081e-2)
    (17, 100_000, 2.05e-4),  # one's own 100,000 crops of people seen 17 times: 7.8 x smaller than 1.6e-3
])
def test_rho_by_rule(images_per_identity, num_images, expected):
    rho = rho_by_rule(images_per_identity, num_images)
    assert rho == pytest.approx(expected, rel=0.006)
    assert implied_images_per_identity(rho, num_images) == pytest.approx(images_per_identity)


@pytest.mark.parametrize("images_per_identity, num_images, message", [
    (1, 100, r"--images-per-identity 1: expected more than 1"),
    (0.5, 100, r"expected more than 1"),
    (float("nan"), 100, r"expected more than 1"),
    (90, 100, r"--images-per-identity 90: expected at most 78.34 for 100 images \(rho 1.15e0 would exceed 1\)"),
    (17, 1, r"the target holds 1 image\(s\): grouping needs at least 2"),
])
def test_rho_by_rule_refuses_with_one_line(images_per_identity, num_images, message):
    with pytest.raises(UserError, match=message):
        rho_by_rule(images_per_identity, num_images)


def test_resolve_rho_says_which_rho_and_why():
    rho, line = resolve_rho("auto", 17.2, 1_376)
    assert rho == rho_by_rule(17.2, 1_376)
    assert line.startswith("rho 1.51e-2 by the paper's rule, 1.28 x (E - 1) / (N - 1) with 17.2 images per person "
                           "among N = 1,376: the released 1.6e-3 is 1.28 x Market-1501's share")
    assert resolve_rho(None, 17.2, 1_376)[0] == rho  # --images-per-identity alone applies the rule

    rho, line = resolve_rho(None, None, 16_522)  # a named pair keeps the released value (DukeMTMC-reID's size)
    assert rho == RELEASED_RHO
    assert line == ("rho 1.6e-3, the released value: by the paper's rule it assumes about 21.7 images per person "
                    "among these 16,522 (--images-per-identity sets rho from your own number)")

    rho, line = resolve_rho(1.5e-2, None, 1_376)
    assert rho == 1.5e-2 and line.startswith("rho 1.5e-2, as given: by the paper's rule it assumes about 17.1 images")


@pytest.mark.parametrize("rho, images_per_identity, message", [
    ("auto", None, "--rho auto: give --images-per-identity"),
    (1.5e-2, 17.2, "--rho 0.015 and --images-per-identity 17.2: give one of them"),
])
def test_resolve_rho_refuses_a_missing_or_second_answer(rho, images_per_identity, message):
    with pytest.raises(UserError, match=message):
        resolve_rho(rho, images_per_identity, 1_376)


def test_the_rho_option_takes_a_share_or_auto():
    assert rho_arg("auto") == "auto" and rho_arg("1.6e-3") == 1.6e-3 and rho_arg("1") == 1.0
    for text in ("0", "1.5", "-0.1", "nan", "many"):
        with pytest.raises(argparse.ArgumentTypeError, match="expected a number in"):
            rho_arg(text)


def test_cluster_sizes_and_their_bins():
    labels = np.array([0] * 4 + [1] * 9 + [2] * 17 + [3] * 5 + [-1] * 5)  # 40 images, sizes 4 9 17 5

    sizes = cluster_sizes(labels)

    assert sizes == {"min": 4, "median": 7.0, "max": 17, "mean": 8.75, "largest_percent": 42.5,
                     "histogram": {"4-7": 2, "8-15": 1, "16-31": 1}}
    assert size_bins(np.array([1, 2, 3, 40])) == {"1": 1, "2-3": 2, "4-7": 0, "8-15": 0, "16-31": 0, "32-63": 1}
    assert cluster_sizes(np.full(6, -1)) == {"min": None, "median": None, "max": None, "mean": None,
                                             "largest_percent": 0.0, "histogram": {}}


def test_grouping_stats_per_type_and_kept_by_every_type():
    labels = np.array([
        [0, 0, 0], [0, 0, 0], [0, 0, 1], [1, 1, -1],
        [1, -1, 2], [1, 1, 2], [-1, 1, 2], [-1, -1, -1],
    ])

    stats = grouping_stats(labels, NAMES)

    assert json.loads(json.dumps(stats)) == stats  # JSON-ready
    assert (stats["images_total"], stats["images_kept"], stats["kept_percent"]) == (8, 4, 50.0)
    assert [stats[f"clusters_{n}"] for n in NAMES] == [2, 2, 3]
    assert [stats[f"kept_percent_{n}"] for n in NAMES] == [75.0, 75.0, 75.0]
    assert stats["cluster_sizes_upper"]["max"] == 3 and stats["cluster_sizes_lower"]["histogram"] == {"1": 1, "2-3": 2}
    with pytest.raises(ValueError, match=r"expected labels of shape \(N, 3\)"):
        grouping_stats(labels[:, :2], NAMES)


def identities(num_people: int, images_each: int) -> np.ndarray:
    return np.repeat(np.arange(num_people), images_each)


def stats_of(global_labels: np.ndarray) -> dict:
    return grouping_stats(np.stack([global_labels] * 3, axis=1), NAMES)


def test_a_sound_grouping_gets_no_warning():
    labels = identities(80, 17)
    labels[::6] = -1  # 83% kept
    assert grouping_warnings(stats_of(labels), NAMES, images_per_identity=17.2, by_rule=True) == []


def test_nearly_every_image_an_outlier():
    labels = np.full(1_000, -1)
    labels[:200] = np.repeat(np.arange(50), 4)  # 20% kept, in clusters of 4

    warnings = grouping_warnings(stats_of(labels), NAMES)

    assert warnings == ["warning: only 20.0% of the 1,000 images are in a cluster of every feature type, the rest "
                        "are outliers; eps is too small for these features: try a larger --rho or a better source "
                        "model"]
    by_rule = grouping_warnings(stats_of(labels), NAMES, images_per_identity=17.0, by_rule=True)
    assert len(by_rule) == 2  # and clusters of 4 for 17 per person: pieces
    assert "try more images per person (--images-per-identity above 17, a larger rho)" in by_rule[0]
    assert by_rule[1].startswith("warning: global clusters hold 4.0 images on average for 17 per person assumed, "
                                 "people cut into pieces; eps is too small")


def test_one_cluster_holding_most_images():
    labels = identities(100, 10)
    labels[:600] = 0  # 600 of 1,000 images: 60 people in one cluster

    warnings = grouping_warnings(stats_of(labels), NAMES, images_per_identity=10.0, by_rule=True)

    # a mean of 1,000 / 41 = 24.4 images per cluster, below 3 x 10: this sign alone
    assert warnings == ["warning: one cluster holds most of the 1,000 images (global 60.0%, upper 60.0%, lower "
                        "60.0%); eps reaches across people: try fewer images per person (--images-per-identity below "
                        "10, a smaller rho) or a better source model"]
    labels[600:] = -1
    upper_only = np.stack([identities(100, 10), labels, identities(100, 10)], axis=1)
    assert grouping_warnings(grouping_stats(upper_only, NAMES), NAMES)[0].startswith(
        "warning: one cluster holds most of the 1,000 images (upper 60.0%); eps reaches across people: try a smaller")


def test_merged_people_without_one_giant_cluster():
    """The x 2 rho of the demo study: 15 clusters for 1,347 of synth_b's 1,376 images, none holding most."""
    labels = np.repeat(np.arange(15), 90)

    warnings = grouping_warnings(stats_of(labels), NAMES, images_per_identity=17.2)

    assert warnings == ["warning: global clusters hold 90.0 images on average for 17.2 per person assumed, people "
                        "merged; eps reaches across people: try a smaller --rho or a better source model"]
