"""The error analysis's tables (food101hf.analysis), from constructed labels and predictions."""

import numpy as np
import pytest
import torch

from conftest import weighted_accuracy
from food101hf.analysis import cluster_order, confused_pairs, confusion_matrix, per_class_table
from food101hf.engine import ranked_predictions, score_logits


def test_support_weighted_per_class_accuracy_is_top1_with_ties_and_missing_classes():
    rng = np.random.default_rng(0)
    labels = torch.from_numpy(rng.integers(0, 6, 500))  # class 6 has no images, so its accuracy is undefined
    logits = torch.from_numpy(rng.integers(0, 3, (500, 7)).astype(np.float32))  # many tied maxima
    metrics = score_logits([(logits[:200], labels[:200]), (logits[200:], labels[200:])])
    confusion = confusion_matrix(labels, ranked_predictions(logits)[:, 0], 7)
    rows = per_class_table(confusion, [f"c{i}" for i in range(7)])
    assert np.trace(confusion) / confusion.sum() == metrics["top1"]
    assert weighted_accuracy(rows) == pytest.approx(metrics["top1"], rel=1e-12)
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
