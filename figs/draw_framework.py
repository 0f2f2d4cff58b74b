"""Draw the pipeline of SSG (Self-similarity Grouping, ICCV 2019) and its SSG++ branch to figs/framework.png.

Run from anywhere: ``python figs/draw_framework.py``; the PNG (about 1600 x 700 px) is written next to this
script. Needs matplotlib only.
"""
from __future__ import annotations

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch

WIDTH, HEIGHT = 16.0, 7.0  # drawing units = inches at 100 dpi, so 1600 x 700 px
DPI = 100
FONT_SIZE = 10.5
LANES = {"global": 5.0, "upper": 3.8, "lower": 2.6}  # bottom y of each feature type's row of boxes
LANE_HEIGHT = 0.9
SSGPP_Y, SSGPP_HEIGHT = 0.45, 1.05  # bottom and height of the SSG++ boxes

COLOURS = {
    "source": "#cfe2f3", "features": "#fde9c8", "distance": "#d9ead3", "dbscan": "#e4d7f1",
    "labels": "#eeeeee", "pseudo": "#fff2a8", "training": "#f4cccc", "ssgpp": "#d0eeee",
}


class Box:
    """A rounded box with centred text; its edges are where arrows attach."""

    def __init__(self, axes, x: float, y: float, width: float, height: float, text: str, colour: str,
                 fontsize: float = FONT_SIZE, weight: str = "normal"):
        self.x, self.y, self.width, self.height = x, y, width, height
        axes.add_patch(FancyBboxPatch((x, y), width, height, boxstyle="round,pad=0.02,rounding_size=0.12",
                                      facecolor=colour, edgecolor="#444444", linewidth=1.2))
        axes.text(x + width / 2, y + height / 2, text, ha="center", va="center", fontsize=fontsize,
                  weight=weight, linespacing=1.35)

    def left(self, y: float | None = None) -> tuple[float, float]:
        return self.x, self.y + self.height / 2 if y is None else y

    def right(self, y: float | None = None) -> tuple[float, float]:
        return self.x + self.width, self.y + self.height / 2 if y is None else y

    def top(self, x: float | None = None) -> tuple[float, float]:
        return self.x + self.width / 2 if x is None else x, self.y + self.height

    def bottom(self, x: float | None = None) -> tuple[float, float]:
        return self.x + self.width / 2 if x is None else x, self.y


def arrow(axes, points: list[tuple[float, float]], label: str = "", label_xy: tuple[float, float] = (0, 0),
          colour: str = "#333333", style: str = "-") -> None:
    """An arrow along a polyline, the head at its last point; ``label`` is centred just above ``label_xy``."""
    for start, end in zip(points[:-2], points[1:-1]):
        axes.plot([start[0], end[0]], [start[1], end[1]], color=colour, linewidth=1.6, linestyle=style,
                  solid_capstyle="butt")
    axes.add_patch(FancyArrowPatch(points[-2], points[-1], arrowstyle="-|>", mutation_scale=16, color=colour,
                                   linewidth=1.6, linestyle=style, shrinkA=0, shrinkB=1))
    if label:
        axes.text(label_xy[0], label_xy[1] + 0.08, label, ha="center", va="bottom", fontsize=FONT_SIZE - 0.5,
                  style="italic", color=colour)


def draw_source_side(axes) -> tuple[Box, Box]:
    """Source images -> source-trained model; the unlabelled target images. Returns (model, target)."""
    source = Box(axes, 0.2, 5.0, 2.0, LANE_HEIGHT, "Source images\n(labelled)", COLOURS["source"])
    model = Box(axes, 0.2, 3.65, 2.0, 1.05, "ResNet-50\ntrained on source\n(triplet + softmax)",
                COLOURS["source"])
    target = Box(axes, 0.2, 2.6, 2.0, LANE_HEIGHT, "Target images\n(unlabelled)", COLOURS["features"])
    arrow(axes, [source.bottom(), model.top()])
    return model, target


def draw_grouping(axes, extractor: Box) -> Box:
    """Per feature type: pooling -> source-aware k-reciprocal distance -> DBSCAN -> labels; returns the
    pseudo-labelled set that gathers them."""
    pooling_text = {"global": "global pool\n$f_g$", "upper": "upper-half pool\n$f_{up}$",
                    "lower": "lower-half pool\n$f_{low}$"}
    label_text = {"global": "labels\n$y_g$", "upper": "labels\n$y_{up}$", "lower": "labels\n$y_{low}$"}
    pseudo = Box(axes, 12.25, 2.6, 1.6, 3.3, "Pseudo-labelled\nset\n\nimages with\nno outlier (-1)\nlabel in any\n"
                 "feature type", COLOURS["pseudo"], weight="normal")
    for name, y in LANES.items():
        pooled = Box(axes, 4.9, y, 1.45, LANE_HEIGHT, pooling_text[name], COLOURS["features"])
        distance = Box(axes, 6.7, y, 2.25, LANE_HEIGHT, "source-aware\nk-reciprocal distance", COLOURS["distance"])
        dbscan = Box(axes, 9.3, y, 1.3, LANE_HEIGHT, "DBSCAN", COLOURS["dbscan"])
        labels = Box(axes, 10.95, y, 0.95, LANE_HEIGHT, label_text[name], COLOURS["labels"])
        arrow(axes, [extractor.right(pooled.y + LANE_HEIGHT / 2), pooled.left()])
        for start, end in ((pooled, distance), (distance, dbscan), (dbscan, labels)):
            arrow(axes, [start.right(), end.left()])
        arrow(axes, [labels.right(), pseudo.left(labels.y + LANE_HEIGHT / 2)])
    axes.text(7.825, 2.42, r"$D = 0.9\,J_{\mathrm{Jaccard}} + 0.1\,D_{\mathrm{source}}$", ha="center", va="top",
              fontsize=FONT_SIZE - 0.5)
    axes.text(9.95, 2.42, "eps frozen\nat iteration 0", ha="center", va="top", fontsize=FONT_SIZE - 1.5)
    return pseudo


def draw_training(axes, pseudo: Box, extractor: Box) -> Box:
    """The triplet training box and the loop back to feature extraction."""
    training = Box(axes, 14.15, 2.6, 1.7, 3.3, "Triplet training\n(70 epochs)\n\n"
                   r"$T(x_2, g)$" "\n" r"$+\ T(f_g, g)$" "\n" r"$+\ T(f_{up}, up)$" "\n" r"$+\ T(f_{low}, low)$",
                   COLOURS["training"], weight="normal")
    arrow(axes, [pseudo.right(), training.left()])
    loop = [training.top(), (training.top()[0], 6.3), (extractor.top()[0], 6.3), extractor.top()]
    arrow(axes, loop, label="repeat 30 iterations: new features, distances, clusters and labels",
          label_xy=(WIDTH / 2, 6.3),
          colour="#a61c00")
    return training


def draw_ssgpp(axes, pseudo: Box, training: Box) -> None:
    """SSG++: one labelled image per global cluster, label propagation, the joint loss."""
    axes.add_patch(FancyBboxPatch((6.45, 0.2), 9.45, 1.75, boxstyle="round,pad=0.02,rounding_size=0.15",
                                  facecolor="none", edgecolor="#2a7f7f", linewidth=1.3, linestyle="--"))
    axes.text(6.6, 1.62, "SSG++ (semitraining.py), from iteration 5", fontsize=FONT_SIZE, weight="bold",
              color="#2a7f7f", va="center")
    one_shot = Box(axes, 6.7, SSGPP_Y, 2.8, SSGPP_HEIGHT, "one labelled image\nper global cluster\n"
                   "(true identity, drawn once)", COLOURS["ssgpp"])
    propagation = Box(axes, 9.95, SSGPP_Y, 3.0, SSGPP_HEIGHT, "label propagation: each image takes\n"
                      "its nearest labelled neighbour's id;\nthe most confident join", COLOURS["ssgpp"])
    joint = Box(axes, 13.4, SSGPP_Y, 2.35, SSGPP_HEIGHT, "joint loss: SSG loss\n"
                r"$+\ T(x_2, y) + \sum_f T(f, y)$", COLOURS["ssgpp"])
    route_y = 2.2
    arrow(axes, [pseudo.bottom(), (pseudo.bottom()[0], route_y), (one_shot.top()[0], route_y), one_shot.top()],
          label="global clusters", label_xy=(11.9, route_y), colour="#2a7f7f")
    arrow(axes, [one_shot.right(), propagation.left()], colour="#2a7f7f")
    arrow(axes, [propagation.right(), joint.left()], colour="#2a7f7f")
    arrow(axes, [joint.top(training.bottom()[0]), training.bottom()], colour="#2a7f7f")


def draw_notation(axes) -> None:
    """What the symbols of the loss mean, in the free corner."""
    lines = [r"$x_2$: embedding of $f_g$ (FC + BN + ReLU)",
             r"$T$: triplet loss, margin 0.5, hardest negative",
             r"$g,\ up,\ low$: global / upper / lower pseudo-labels",
             r"$y$: given or propagated identity (SSG++)"]
    axes.text(0.25, 1.85, "Notation", fontsize=FONT_SIZE, weight="bold", va="top")
    axes.text(0.25, 1.5, "\n".join(lines), fontsize=FONT_SIZE - 0.5, va="top", linespacing=1.6)


def draw_framework() -> Figure:
    """The whole diagram on a new figure."""
    figure = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI)
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_xlim(0, WIDTH)
    axes.set_ylim(0, HEIGHT)
    axes.axis("off")
    axes.text(WIDTH / 2, 6.72, "SSG: Self-similarity Grouping for unsupervised cross-domain person re-ID",
              ha="center", va="center", fontsize=16, weight="bold")
    model, target = draw_source_side(axes)
    extractor = Box(axes, 2.65, 2.6, 1.9, 3.3, "Feature\nextraction\n\nResNet-50\n2048 x 8 x 4 map\n\n"
                    "f(x) + f(flip x),\nL2-normalised", COLOURS["features"])
    arrow(axes, [model.right(), extractor.left(model.y + model.height / 2)])
    arrow(axes, [target.right(), extractor.left(target.y + LANE_HEIGHT / 2)])
    pseudo = draw_grouping(axes, extractor)
    training = draw_training(axes, pseudo, extractor)
    draw_ssgpp(axes, pseudo, training)
    draw_notation(axes)
    return figure


def main() -> None:
    fpath = os.path.join(os.path.dirname(os.path.abspath(__file__)), "framework.png")
    draw_framework().savefig(fpath, format="png")
    print(f"wrote {fpath}")


if __name__ == "__main__":
    main()
