import csv
import json
import re
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from datasets import ClassLabel, Dataset, DatasetDict, Features
from datasets import Image as ImageFeature
from PIL import Image

from conftest import CLASSES, plant_bad_files, run_script, write_image_folder
from food101hf.audit import audit, folder_items, hub_items
from food101hf.folders import list_folder
from food101hf.data import build_transform, with_transform
from food101hf.engine import ranked_predictions, score_logits
from food101hf.report import (confused_pairs, confusion_matrix, cluster_order, per_class_table, plot_confusion,
                              write_report)

DATA_CONFIG = {"interpolation": "bilinear", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 1.0}


@pytest.fixture
def accelerator():
    AcceleratorState._reset_state(True)
    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(True)


def _weighted_accuracy(rows):
    return sum(row["accuracy"] * row["support"] for row in rows if row["support"]) / sum(r["support"] for r in rows)


def test_support_weighted_per_class_accuracy_is_top1_with_ties_and_missing_classes():
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 6, 500))  # class 6 has no images, so its accuracy is undefined
    logits = torch.from_numpy(rng.integers(0, 3, (500, 7)).astype(np.float32))  # many tied maxima
    metrics = score_logits([(logits[:200], labels[:200]), (logits[200:], labels[200:])])
    confusion = confusion_matrix(labels, ranked_predictions(logits)[:, 0], 7)
    rows = per_class_table(confusion, [f"c{i}" for i in range(7)])
    assert np.trace(confusion) / confusion.sum() == metrics["top1"]
    assert _weighted_accuracy(rows) == pytest.approx(metrics["top1"], rel=1e-12)
    assert rows[-1]["label"] == "c6" and rows[-1]["accuracy"] is None and rows[-1]["f1"] is None
    assert all(row["accuracy"] == row["recall"] for row in rows)
    assert [r["accuracy"] for r in rows[:-1]] == sorted(r["accuracy"] for r in rows[:-1])  # worst first


def test_confused_pairs_are_recovered_from_a_constructed_confusion():
    names = ["steak", "filet_mignon", "pork_chop", "tacos"]
    # steak: 10 images, 4 called filet_mignon, 1 pork_chop; filet_mignon: 5 images, 4 called steak; tacos: perfect
    pairs = [(0, 0)] * 5 + [(0, 1)] * 4 + [(0, 2)] + [(1, 1)] + [(1, 0)] * 4 + [(2, 2)] * 3 + [(3, 3)] * 2
    labels, predictions = zip(*pairs)
    rows = confused_pairs(confusion_matrix(labels, predictions, 4), names)
    assert [(r["true_label"], r["predicted_label"], r["count"]) for r in rows] == [
        ("filet_mignon", "steak", 4), ("steak", "filet_mignon", 4), ("steak", "pork_chop", 1)]
    assert [r["share_of_true_class"] for r in rows] == [0.8, 0.4, 0.1]  # equal counts: larger share first
    table = {r["label"]: r for r in per_class_table(confusion_matrix(labels, predictions, 4), names)}
    assert table["steak"]["precision"] == 5 / 9 and table["pork_chop"]["precision"] == 3 / 4
    assert table["tacos"]["f1"] == 1.0
    never_predicted = per_class_table(confusion_matrix([0, 1], [0, 0], 2), ["a", "b"])[0]
    assert never_predicted == {"label": "b", "accuracy": 0.0, "support": 1, "precision": None, "recall": 0.0,
                               "f1": 0.0}


def test_cluster_order_keeps_confused_classes_together():
    n = 8  # even classes confuse each other, odd classes each other, plus one stray confusion between the groups
    confusion = np.eye(n, dtype=int) * 20
    for a in range(n):
        for b in range(n):
            if a != b and a % 2 == b % 2:
                confusion[a, b] = 3
    confusion[0, 1] = 1
    order = cluster_order(confusion)
    assert sorted(order) == list(range(n))
    groups = [i % 2 for i in order]
    assert groups == sorted(groups) or groups == sorted(groups, reverse=True)
    assert cluster_order(confusion) == order  # deterministic


def test_confusion_matrix_of_101_classes_is_large_enough_to_read(tmp_path):
    names = [f"class_name_{i:03d}" for i in range(101)]
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(101), 5)
    predictions = np.where(rng.random(505) < 0.7, labels, rng.integers(0, 101, 505))
    size = plot_confusion(confusion_matrix(labels, predictions, 101), names, tmp_path / "cm.png", "t")
    assert Image.open(tmp_path / "cm.png").size == size and min(size) >= 1000


class MeanColour(torch.nn.Module):
    """Logits from the image's mean colour: fixed weights, so some images are right and some wrong."""

    pretrained_cfg = {"mean": DATA_CONFIG["mean"], "std": DATA_CONFIG["std"]}

    def __init__(self, num_classes: int):
        super().__init__()
        self.head = torch.nn.Linear(3, num_classes)
        torch.nn.init.normal_(self.head.weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(x.mean((2, 3)))


def _dataset(tmp_path):
    write_image_folder(tmp_path / "val", CLASSES, per_class=4, size=(40, 32))
    images, labels = [], []
    for index, name in enumerate(CLASSES):
        for path in sorted((tmp_path / "val" / name).iterdir()):
            images.append(str(path))
            labels.append(index)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=CLASSES)})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_report_files_pictures_and_card_section(accelerator, tmp_path):
    dataset = _dataset(tmp_path)
    transform = build_transform(DATA_CONFIG, 16, False, normalize=False)  # uint8, as train.py's loaders
    loader = torch.utils.data.DataLoader(with_transform(dataset, transform), batch_size=5)
    model, loader = accelerator.prepare(MeanColour(len(CLASSES)), loader)
    out = tmp_path / "report"
    metrics = write_report(accelerator, model, loader, CLASSES, out, 16, tta=True, eval_split="validation")

    assert sorted(p.name for p in out.iterdir()) == [
        "card.md", "confident_mistakes.png", "confused_pairs.csv", "confusion_matrix.png", "metrics.json",
        "per_class.csv", "report.md"]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["num_eval_samples"] == 12 and metrics["tta"] is True and metrics["image_size"] == 16
    with open(out / "per_class.csv", encoding="utf-8") as f:
        rows = [{"accuracy": float(r["accuracy"]), "support": int(r["support"])} for r in csv.DictReader(f)]
    assert _weighted_accuracy(rows) == pytest.approx(metrics["top1"], rel=1e-12)
    assert 0 < metrics["top1"] < 1  # some mistakes to show
    with open(out / "confused_pairs.csv", encoding="utf-8") as f:
        pairs = list(csv.DictReader(f))
    assert sum(int(p["count"]) for p in pairs) == round((1 - metrics["top1"]) * 12)

    report = (out / "report.md").read_text(encoding="utf-8")
    stated = dict(re.findall(r"!\[[^\]]*\]\(([\w.]+)\)\n\n\*[^*]*\((\d+×\d+) px\)", report))
    assert set(stated) == {"confusion_matrix.png", "confident_mistakes.png"}
    for name, size in stated.items():
        image = Image.open(out / name)
        assert f"{image.width}×{image.height}" == size and image.width >= 1000
        assert np.asarray(image.convert("L")).std() > 10  # something drawn, not a blank canvas
    assert f"**top-1 {metrics['top1']:.2%}**" in report and "flip TTA" in report
    card = (out / "card.md").read_text(encoding="utf-8")
    assert "](report/confusion_matrix.png)" in card and "Most confused pairs" in card


def _plant_audit_folder(root) -> list[str]:
    write_image_folder(root / "train", ["a", "b"], per_class=3, size=(30, 20))
    write_image_folder(root / "validation", ["a", "b"], per_class=2, size=(30, 20), seed=1)
    bad = plant_bad_files(root / "train" / "a")
    (root / "train" / "b" / "notes.txt").write_text("not named like an image: imagefolder skips it too")
    shutil.copy(root / "train" / "a" / "1.jpg", root / "train" / "b" / "copy.jpg")  # same split, other label
    shutil.copy(root / "train" / "a" / "2.jpg", root / "validation" / "a" / "leak.jpg")  # across splits
    Image.new("L", (12, 10)).save(root / "train" / "b" / "grey.png")
    return [f"a/{name}" for name in bad]


def test_audit_counts_planted_duplicates_and_bad_files(tmp_path):
    bad = _plant_audit_folder(tmp_path / "d")
    other = Counter()
    result = audit(folder_items(list_folder(tmp_path / "d"), other), other)
    train, validation = result["splits"]["train"], result["splits"]["validation"]
    assert (train["images"], train["unreadable"], train["other_files"]) == (8 + len(bad), len(bad), 1)
    assert train["modes"] == {"RGB": 7, "L": 1} and train["most_common_sizes"]["30x20"] == 7
    assert train["longer_side"] == [12, 30] and train["classes"] == 2 and train["duplicates"] == 1
    assert (validation["images"], validation["unreadable"], validation["duplicates"]) == (5, 0, 0)
    assert result["duplicate_groups"] == 2
    assert result["duplicates_across_splits"] == 1 and result["duplicates_across_labels"] == 1
    assert sorted(u["file"] for u in result["unreadable_files"]) == sorted(bad)
    assert ["train/a/2.jpg", "validation/a/leak.jpg"] in result["duplicate_files"]


def test_audit_of_a_hub_style_dataset_reads_undecoded_bytes(tmp_path):
    write_image_folder(tmp_path / "i", ["a"], per_class=2)
    good = [(tmp_path / "i" / "a" / f"{i}.jpg").read_bytes() for i in range(2)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["x", "y"])})
    rows = {"image": [{"bytes": b, "path": None} for b in (good[0], good[1], good[0], b"junk")],
            "label": [0, 1, 1, 0]}
    splits = DatasetDict(train=Dataset.from_dict(rows, features=features))
    result = audit(hub_items(splits, "image", "label"))
    assert result["splits"]["train"]["unreadable"] == 1 and result["splits"]["train"]["modes"] == {"RGB": 3}
    assert result["duplicate_groups"] == 1 and result["duplicates_across_labels"] == 1


@pytest.mark.slow
def test_report_and_audit_commands_on_a_trained_model(image_folder, tmp_path):
    model = tmp_path / "run"
    assert run_script("train.py", "--dataset", str(image_folder), "--no-pretrained", "--freeze", "none",
                      "--image-size", "32", "--epochs", "1", "--batch-size", "4", "--num-workers", "0",
                      "--no-report", "--output-dir", str(model)).returncode == 0
    assert not (model / "report").exists() and "Error analysis" not in (model / "README.md").read_text()

    out = tmp_path / "r"
    result = run_script("-m", "food101hf.report", "--model", str(model), "--dataset", str(image_folder),
                        "--split", "validation", "--image-size", "48", "--num-workers", "0", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert "report: 100%" in result.stderr  # the progress bar
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["image_size"] == 48 and metrics["num_eval_samples"] == 9 and metrics["tta"] is False
    assert (out / "confusion_matrix.png").stat().st_size > 0

    result = run_script("-m", "food101hf.report", "--model", str(model), "--dataset", str(image_folder),
                        "--split", "tset", "--output-dir", str(out))
    assert result.returncode == 2 and "no split 'tset'" in result.stderr and "Traceback" not in result.stderr

    bad = _plant_audit_folder(tmp_path / "bad")
    result = run_script("-m", "food101hf.report", "--audit", "--dataset", str(tmp_path / "bad"),
                        "--output-dir", str(tmp_path / "audit"))
    assert result.returncode == 0, result.stderr
    assert f"| bad files (training skips them) | {len(bad)} | 0 |" in result.stdout
    assert json.loads((tmp_path / "audit" / "audit.json").read_text())["duplicate_groups"] == 2


FOOD101 = (Path(__file__).parent / "data" / "food101_classes.txt").read_text().split()


def test_confident_mistakes_captions_fit_their_tiles_with_food101s_longest_names():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    from food101hf.report import _caption, mistakes_figure

    assert len(FOOD101) == 101 and FOOD101[16:18] == ["cheesecake", "cheese_plate"]  # the Hub's order
    longest = sorted(FOOD101, key=len, reverse=True)[:24]
    pairs = [("lobster_roll_sandwich", "strawberry_shortcake")] + list(zip(longest, reversed(longest)))[:23]
    images = [Image.new("RGB", (400, 300), (200, 120, 60)) for _ in pairs]
    fig = mistakes_figure(images, [_caption(t, p, 0.97) for t, p in pairs], "24 mistakes")
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw(renderer)
    width, height = fig.get_size_inches() * fig.dpi
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title(loc="left")]
    tiles = [ax.get_window_extent(renderer) for ax in fig.axes if ax.get_title(loc="left")]
    assert len(boxes) == 24
    for i, box in enumerate(boxes):
        assert 0 <= box.x0 and box.x1 <= width and 0 <= box.y0 and box.y1 <= height, "caption outside the picture"
        assert box.x1 <= tiles[i].x0 + 250, "caption wider than its tile"
        assert not any(box.overlaps(other) for other in boxes[i + 1:]), "captions overlap"
        assert not any(box.overlaps(tile) for j, tile in enumerate(tiles) if j != i), "caption over another image"
    assert _caption("lobster_roll_sandwich", "strawberry_shortcake", 0.97) == (
        "true: lobster roll sandwich\npredicted: strawberry\nshortcake (97%)")
