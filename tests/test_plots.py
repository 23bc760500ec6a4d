"""The error analysis's pictures (food101hf.plots): readable at 101 classes, captions that fit."""

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.transforms import Bbox
from PIL import Image

from conftest import FOOD101
from food101hf.analysis import confusion_matrix
from food101hf.plots import caption, confusion_figure, mistakes_figure, plot_confusion


def test_confusion_matrix_of_101_classes_is_large_enough_to_read(tmp_path):
    names = [f"class_name_{i:03d}" for i in range(101)]
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(101), 5)
    predictions = np.where(rng.random(505) < 0.7, labels, rng.integers(0, 101, 505))
    size = plot_confusion(confusion_matrix(labels, predictions, 101), names, tmp_path / "cm.png", "t")
    assert Image.open(tmp_path / "cm.png").size == size and min(size) >= 1000


def test_confident_mistakes_captions_fit_their_tiles_with_food101s_longest_names():
    assert len(FOOD101) == 101 and FOOD101[16:18] == ["cheesecake", "cheese_plate"]  # the Hub's order
    longest = sorted(FOOD101, key=len, reverse=True)[:24]
    pairs = [("lobster_roll_sandwich", "strawberry_shortcake")] + list(zip(longest, reversed(longest)))[:23]
    images = [Image.new("RGB", (400, 300), (200, 120, 60)) for _ in pairs]
    images[-1] = Image.new("RGB", (8, 8))  # a digit-sized image is enlarged to its tile
    fig = mistakes_figure(images, [caption(t, p, 0.97) for t, p in pairs], "24 mistakes")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    width, height = fig.get_size_inches() * fig.dpi
    boxes = [text.get_window_extent(renderer) for text in fig.texts[1:]]  # the first is the title
    tiles = [Bbox.from_extents(x0, y0, x1, y1) for x0, x1, y0, y1 in (image.get_extent() for image in fig.images)]
    assert len(boxes) == len(tiles) == 24 and not fig.axes
    assert min(tile.width for tile in tiles) > 200  # scaled to the tile, the 8 x 8 image too
    for i, box in enumerate(boxes):
        assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height, "caption outside the picture"
        assert box.x1 <= tiles[i].x0 + 250, "caption wider than its tile"
        assert not any(box.overlaps(other) for other in boxes[i + 1:]), "captions overlap"
        assert not any(box.overlaps(tile) for j, tile in enumerate(tiles) if j != i), "caption over another image"
    assert caption("lobster_roll_sandwich", "strawberry_shortcake", 0.97) == (
        "true: lobster roll sandwich\npredicted: strawberry\nshortcake (97%)")


@pytest.mark.parametrize("confusion, ticks", [
    ([[18, 2, 0], [1, 19, 0], [0, 0, 20]], ["5%", "10%", "20%", "50%", "100%"]),  # the demo's 20 a class: from 2.5%
    ([[1, 1, 0], [0, 2, 0], [0, 1, 1]], ["50%", "100%"]),  # 2 a class: from 25%, where 6×10⁻¹ was printed
])
def test_both_pictures_spell_class_names_alike_and_the_colour_bar_reads_in_percent(confusion, ticks):
    fig = confusion_figure(np.array(confusion), ["apple_pie", "chocolate_cake", "waffles"], "t")
    FigureCanvasAgg(fig).draw()
    matrix, colour_bar = fig.axes
    assert sorted(t.get_text() for t in matrix.get_xticklabels()) == ["apple pie", "chocolate cake", "waffles"]
    assert [t.get_text() for t in colour_bar.get_yticklabels() if t.get_text()] == ticks
    assert not [t.get_text() for t in colour_bar.get_yticklabels(minor=True) if t.get_text()]
    assert caption("apple_pie", "chocolate_cake", 0.5).startswith("true: apple pie\npredicted: chocolate cake")
