"""Draw the diagrams the notebooks show: `make figures` (or `python images/make_figures.py`).

Each figure is drawn with matplotlib in the course style (``resnets_utils.use_course_style``) and
written next to this file as PNG:

* ``skip_connection.png``: two layers with a shortcut around them;
* ``identity_block.png``: the identity block's main path and its unchanged shortcut;
* ``convolutional_block.png``: the convolutional block, with a 1x1 conv + BN on the shortcut;
* ``resnet50_stages.png``: ResNet50's stages and the shape of the tensor after each one.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402

from resnets_utils import PALETTE, use_course_style  # noqa: E402

OUT = Path(__file__).resolve().parent

# One colour per kind of layer, the same in every figure.
KIND_COLOURS = {
    "conv": PALETTE[0],  # blue
    "bn": PALETTE[1],  # orange
    "relu": PALETTE[2],  # green
    "add": PALETTE[3],  # vermillion
    "io": "#DDDDDD",
    "pool": PALETTE[4],  # purple
    "dense": PALETTE[5],  # sky blue
}
TEXT_ON = {"conv": "white", "bn": "black", "relu": "white", "add": "white", "io": "black", "pool": "white", "dense": "black"}


def _box(ax, x, y, w, h, text, kind, fontsize=10):
    ax.add_patch(
        FancyBboxPatch((x - w / 2, y - h / 2), w, h, boxstyle="round,pad=0.02,rounding_size=0.08",
                       facecolor=KIND_COLOURS[kind], edgecolor="black", linewidth=0.8)
    )
    ax.text(x, y, text, ha="center", va="center", fontsize=fontsize, color=TEXT_ON[kind], linespacing=1.15)


def _arrow(ax, start, end, **kwargs):
    style = dict(arrowstyle="-|>", mutation_scale=12, linewidth=1.2, color="black", shrinkA=0, shrinkB=0)
    style.update(kwargs)
    ax.add_patch(FancyArrowPatch(start, end, **style))


def _blank_axes(width, height, xlim, ylim):
    fig, ax = plt.subplots(figsize=(width, height))
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    ax.set_aspect("equal")
    ax.axis("off")
    return fig, ax


def _legend(ax, kinds, y, conv_label="Conv2D"):
    labels = {"conv": conv_label, "bn": "BatchNorm", "relu": "ReLU", "add": "Add", "pool": "Pooling", "dense": "Dense"}
    handles = [plt.Rectangle((0, 0), 1, 1, facecolor=KIND_COLOURS[k], edgecolor="black", linewidth=0.6) for k in kinds]
    ax.legend(handles, [labels[k] for k in kinds], loc="lower center", bbox_to_anchor=(0.5, y), ncol=len(kinds), fontsize=9, handlelength=1.2)


def _block_figure(title, stages, shortcut, filename, note, input_label="X", conv_label="Conv2D"):
    """A residual block: ``stages`` is a list of (label, kind) boxes on the main path; ``shortcut`` the boxes on the skip path."""
    step, w, h = 1.25, 1.05, 0.9
    n = len(stages)
    width = (n + 2) * step
    fig, ax = _blank_axes(width * 1.0, 3.6, (-0.2, width + 0.2), (-1.6, 2.3))
    xs = [step * (i + 1) for i in range(n)]
    ax.text(0.1, 0, input_label, ha="center", va="center", fontsize=13, fontweight="bold")
    _arrow(ax, (0.3, 0), (xs[0] - w / 2, 0))
    for i, (label, kind) in enumerate(stages):
        _box(ax, xs[i], 0, w if kind != "add" else 0.55, h if kind != "add" else 0.55, label, kind, fontsize=9)
        if i + 1 < n:
            left = xs[i] + (w / 2 if kind != "add" else 0.28)
            right = xs[i + 1] - (w / 2 if stages[i + 1][1] != "add" else 0.28)
            _arrow(ax, (left, 0), (right, 0))
    add_x = xs[[k for _, k in stages].index("add")]
    _arrow(ax, (xs[-1] + w / 2, 0), (width - 0.05, 0))
    ax.text(width + 0.05, 0.35, "output", ha="right", fontsize=10)
    # The shortcut: up from X, along the top, down into the Add.
    top = 1.45
    ax.plot([0.55, 0.55], [0, top], color="black", linewidth=1.2)
    if shortcut:
        sx = [(0.55 + add_x) / 2 + (i - (len(shortcut) - 1) / 2) * step for i in range(len(shortcut))]
        ax.plot([0.55, sx[0] - w / 2], [top, top], color="black", linewidth=1.2)
        for i, (label, kind) in enumerate(shortcut):
            _box(ax, sx[i], top, w, h, label, kind, fontsize=9)
            if i + 1 < len(shortcut):
                _arrow(ax, (sx[i] + w / 2, top), (sx[i + 1] - w / 2, top))
        ax.plot([sx[-1] + w / 2, add_x], [top, top], color="black", linewidth=1.2)
        ax.text((0.55 + add_x) / 2, top + 0.6, "shortcut", ha="center", fontsize=10, style="italic")
    else:
        ax.plot([0.55, add_x], [top, top], color="black", linewidth=1.2)
        ax.text((0.55 + add_x) / 2, top + 0.15, "shortcut (identity): the input is added unchanged", ha="center", fontsize=10, style="italic")
    _arrow(ax, (add_x, top), (add_x, 0.3))
    ax.text((0.55 + add_x) / 2, -0.75, "main path", ha="center", fontsize=10, style="italic")
    ax.set_title(title, pad=4)
    ax.text(width / 2, -1.15, note, ha="center", fontsize=9, color="#444444")
    kinds = sorted({k for _, k in stages + shortcut}, key=list(KIND_COLOURS).index)
    _legend(ax, kinds, -0.08, conv_label)
    fig.savefig(OUT / filename)
    plt.close(fig)


def skip_connection():
    stages = [("Linear", "conv"), ("ReLU", "relu"), ("Linear", "conv"), ("+", "add"), ("ReLU", "relu")]
    _block_figure(
        "A skip connection: a[l] jumps over two layers",
        stages, [], "skip_connection.png",
        "a[l+2] = ReLU(z[l+2] + a[l]): if the two layers' weights are zero, z[l+2] = 0 and the output is simply a[l].",
        input_label="a[l]", conv_label="Linear layer (weights)",
    )


def identity_block():
    stages = [
        ("Conv2D\n1x1, F1", "conv"), ("BN", "bn"), ("ReLU", "relu"),
        ("Conv2D\nfxf, F2\n'same'", "conv"), ("BN", "bn"), ("ReLU", "relu"),
        ("Conv2D\n1x1, F3", "conv"), ("BN", "bn"), ("+", "add"), ("ReLU", "relu"),
    ]
    _block_figure(
        "The identity block", stages, [], "identity_block.png",
        "Input and output have the same shape (F3 = input channels), so X can be added as it is.",
    )


def convolutional_block():
    stages = [
        ("Conv2D\n1x1, F1\nstride s", "conv"), ("BN", "bn"), ("ReLU", "relu"),
        ("Conv2D\nfxf, F2\n'same'", "conv"), ("BN", "bn"), ("ReLU", "relu"),
        ("Conv2D\n1x1, F3", "conv"), ("BN", "bn"), ("+", "add"), ("ReLU", "relu"),
    ]
    shortcut = [("Conv2D\n1x1, F3\nstride s", "conv"), ("BN", "bn")]
    _block_figure(
        "The convolutional block", stages, shortcut, "convolutional_block.png",
        "Stride s shrinks height and width on both paths; the shortcut's 1x1 conv gives it F3 channels, so the shapes match at the Add.",
    )


def resnet50_stages():
    stages = [
        ("Input\nimage", "64x64x3", "io", 64),
        ("Stage 1\nzero-pad 3\nconv 7x7, /2\nBN, ReLU\nmax-pool 3x3, /2", "15x15x64", "conv", 15),
        ("Stage 2\nconv block s=1\n+ 2 identity\n[64, 64, 256]", "15x15x256", "bn", 15),
        ("Stage 3\nconv block s=2\n+ 3 identity\n[128, 128, 512]", "8x8x512", "bn", 8),
        ("Stage 4\nconv block s=2\n+ 5 identity\n[256, 256, 1024]", "4x4x1024", "bn", 4),
        ("Stage 5\nconv block s=2\n+ 2 identity\n[512, 512, 2048]", "2x2x2048", "bn", 2),
        ("Avg-pool 2x2\nFlatten", "2048", "pool", 1),
        ("Dense\nsoftmax", "6", "dense", 1),
    ]
    step = 2.05
    fig, ax = _blank_axes(13.5, 4.2, (-1.0, step * len(stages) - 1.0), (-2.5, 2.1))
    for i, (label, shape, kind, size) in enumerate(stages):
        x = i * step
        height = 1.0 + 1.6 * (size / 64) ** 0.5  # box height follows the spatial size
        _box(ax, x, 0, 1.75, height, label, kind, fontsize=8.5)
        ax.text(x, -1.55, shape, ha="center", va="top", fontsize=10, fontweight="bold")
        if i + 1 < len(stages):
            _arrow(ax, (x + 0.87, 0), (x + step - 0.87, 0))
    ax.text(step * (len(stages) - 1) / 2, -2.2,
            "ResNet50 on 64x64 signs: 50 weight layers (1 + 3x(3+4+6+3) conv + 1 dense), 23.6 M parameters. "
            "Bold: output shape of each stage.", ha="center", fontsize=9.5, color="#444444")
    ax.set_title("ResNet50, stage by stage", pad=4)
    fig.savefig(OUT / "resnet50_stages.png")
    plt.close(fig)


def main():
    use_course_style()
    for draw in (skip_connection, identity_block, convolutional_block, resnet50_stages):
        draw()
        print(f"drew {draw.__name__}.png")


if __name__ == "__main__":
    main()
