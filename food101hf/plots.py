"""The error analysis's pictures, drawn with matplotlib's object API (no pyplot: no global backend or figure
state, nothing needs a display): the confusion matrix in cluster order, and the most confidently wrong images."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import PercentFormatter
from PIL import Image, ImageOps

from .analysis import cluster_order

DPI = 100


SHARE_TICKS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1)  # the colour bar's, as percentages


def display_name(label: str) -> str:
    """A class name as the pictures show it: Food-101's names read with spaces (`lobster_roll_sandwich` ->
    "lobster roll sandwich"), the same in every picture; the CSV files keep the names as the dataset spells them."""
    return label.replace("_", " ")


def confusion_figure(confusion: np.ndarray, label_names: list[str], title: str) -> Figure:
    """The confusion matrix in cluster order, every class labelled: 1000 px square up to ~47 classes, 1866 px
    for 101. The diagonal (accuracy) is muted grey so the confusions, coloured by the share of the true class
    on a log scale, stand out; the colour bar reads in plain percentages (1%, 2%, 5%, ...)."""
    n = len(label_names)
    order = cluster_order(confusion)
    counts = confusion[np.ix_(order, order)]
    support = counts.sum(1, keepdims=True)
    share = np.divide(counts, support, out=np.zeros(counts.shape), where=support > 0)
    diagonal = np.eye(n, dtype=bool)
    pixels = max(1000, 250 + 16 * n)
    fig = Figure(figsize=(pixels / DPI, pixels / DPI), dpi=DPI, layout="constrained")
    ax = fig.subplots()
    ax.imshow(np.where(diagonal, share, np.nan), cmap="Greys", vmin=0, vmax=1, alpha=0.35)
    # the smallest possible share is one image of the largest class; half of it keeps that visible
    norm = LogNorm(vmin=0.5 / max(int(support.max()), 1), vmax=1)
    image = ax.imshow(np.where(~diagonal & (counts > 0), share, np.nan), cmap="YlOrRd", norm=norm)
    fontsize = float(np.clip(0.55 * (pixels - 250) / n, 4, 10))  # points ≈ 0.75 px at 100 dpi: fits each row
    names = [display_name(label_names[i]) for i in order]
    ax.set_xticks(range(n), names, rotation=90, fontsize=fontsize)
    ax.set_yticks(range(n), names, fontsize=fontsize)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"{title}\ngrey: accuracy; colour: share of the true class's images (log scale); "
                 f"classes ordered so that confusions cluster", fontsize=11)
    if n <= 30:  # room to print the counts, which also tell a low-accuracy diagonal cell from an empty one
        for t, p in zip(*np.nonzero(counts)):
            ax.text(p, t, str(counts[t, p]), ha="center", va="center", fontsize=9,
                    color="white" if t != p and share[t, p] > 0.3 else "black")
    colour_bar = fig.colorbar(image, ax=ax, shrink=0.4, label="share of the true class", format=PercentFormatter(1))
    colour_bar.set_ticks([t for t in SHARE_TICKS if t >= norm.vmin])
    colour_bar.minorticks_off()  # a log axis labels its minor ticks in scientific notation (6×10⁻¹)
    return fig


def plot_confusion(confusion: np.ndarray, label_names: list[str], path: Path, title: str) -> tuple[int, int]:
    """`confusion_figure` saved to `path`. Returns the picture's (width, height) in pixels."""
    fig = confusion_figure(confusion, label_names, title)
    fig.savefig(path, dpi=DPI)
    width, height = fig.get_size_inches() * DPI
    return round(width), round(height)


TILE = 250  # px per image column; a caption line holds CAPTION_CHARS characters of 9 pt DejaVu Sans in it
TILE_HEIGHT, CAPTION_HEIGHT, HEADER, MARGIN = 300, 66, 60, 6  # px: a tile, its caption's room (4 lines), the title
CAPTION_CHARS = 30


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """The image scaled to fit width x height px, keeping its aspect ratio: nearest-neighbour when enlarging (an
    8x8 digit stays pixels, as matplotlib's imshow shows it), bicubic with antialiasing when shrinking."""
    scale = min(width / image.width, height / image.height)
    return ImageOps.contain(image, (width, height), Image.NEAREST if scale > 1 else Image.BICUBIC)


def mistakes_figure(images: list, captions: list[str], title: str, cols: int = 6) -> Figure:
    """A grid of images, each with its caption (at most four lines, see `caption`) in a room of its own above it;
    a single line of text when there are none. Each image is drawn at its pixels' place (`Figure.figimage`) and
    each caption as figure text: no axes, whose tick machinery took 3.5 of 3.8 s of CPU for 24 tiles, even hidden
    and laid out by constrained layout."""
    rows = max(1, math.ceil(len(images) / cols))
    width, height = TILE * cols, TILE_HEIGHT * rows + HEADER
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI)
    fig.text(0.5, 1 - HEADER / 2 / height, title, ha="center", va="center", fontsize=12)
    if not images:
        fig.text(0.5, 0.5, "every image was classified correctly", ha="center", va="center", fontsize=14)
    for i, (image, text) in enumerate(zip(images, captions)):
        row, col = divmod(i, cols)
        left = col * TILE + MARGIN
        top = height - HEADER - row * TILE_HEIGHT - CAPTION_HEIGHT  # px from the bottom: the image's top edge
        tile = fit(image, TILE - 2 * MARGIN, TILE_HEIGHT - CAPTION_HEIGHT - 2 * MARGIN)
        fig.figimage(np.asarray(tile), left, top - tile.height, origin="upper")
        fig.text(left / width, (top + 4) / height, text, fontsize=9, ha="left", va="bottom")
    return fig


def plot_mistakes(images: list, captions: list[str], path: Path, title: str, cols: int = 6) -> tuple[int, int]:
    """`mistakes_figure` saved to `path`. Returns the picture's (width, height) in pixels."""
    fig = mistakes_figure(images, captions, title, cols)
    fig.savefig(path, dpi=DPI)
    width, height = fig.get_size_inches() * DPI
    return round(width), round(height)


def caption(true: str, predicted: str, confidence: float) -> str:
    """Two lines at most per class name (`display_name`), wrapped at word boundaries, each line short enough for its
    tile."""
    def wrap(prefix: str, name: str, suffix: str = "") -> str:
        lines = textwrap.wrap(prefix + display_name(name) + suffix, CAPTION_CHARS, max_lines=2,
                              placeholder="…", break_long_words=True)
        return "\n".join(lines)

    return f"{wrap('true: ', true)}\n{wrap('predicted: ', predicted, f' ({confidence:.0%})')}"
