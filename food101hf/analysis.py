"""The tables of an error analysis, from integer labels and predictions alone (numpy, no torch, no pictures):
the confusion matrix, per-class accuracy/precision/recall/F1, the most confused pairs, and a class order in which
confused classes sit together. `food101hf.report` writes them; `food101hf.plots` draws them."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    labels, predictions = np.asarray(labels, dtype=np.int64), np.asarray(predictions, dtype=np.int64)
    return np.bincount(labels * num_classes + predictions, minlength=num_classes**2).reshape(num_classes,
                                                                                           num_classes)


def _ratio(numerator: int, denominator: int) -> float | None:
    return numerator / denominator if denominator else None


def per_class_table(confusion: np.ndarray, label_names: list[str]) -> list[dict]:
    """One row per class, worst accuracy first. A class's accuracy is the share of its images classified
    correctly, which is also its recall, so the support-weighted mean of the accuracies is exactly top-1.
    A class with no images has no accuracy (None); one never predicted has no precision (None) and an F1 of 0."""
    correct, support, predicted = np.diag(confusion), confusion.sum(1), confusion.sum(0)
    rows = []
    for i, name in enumerate(label_names):
        recall = _ratio(int(correct[i]), int(support[i]))
        precision = _ratio(int(correct[i]), int(predicted[i]))
        if recall is None:
            f1 = None
        elif precision is None or precision + recall == 0:
            f1 = 0.0
        else:
            f1 = 2 * precision * recall / (precision + recall)
        rows.append({"label": name, "accuracy": recall, "support": int(support[i]), "precision": precision,
                     "recall": recall, "f1": f1})
    return sorted(rows, key=lambda row: (row["accuracy"] is None, row["accuracy"] or 0.0, row["label"]))


def confused_pairs(confusion: np.ndarray, label_names: list[str]) -> list[dict]:
    """Every (true, predicted) pair of different classes with at least one image, the most confused first:
    by count, then by the share of the true class's images it takes."""
    support = confusion.sum(1)
    rows = [{"true_label": label_names[t], "predicted_label": label_names[p], "count": int(confusion[t, p]),
             "share_of_true_class": float(confusion[t, p] / support[t])}
            for t, p in zip(*np.nonzero(confusion)) if t != p]
    return sorted(rows, key=lambda row: (-row["count"], -row["share_of_true_class"], row["true_label"],
                                         row["predicted_label"]))


def cluster_order(confusion: np.ndarray) -> list[int]:
    """A class order in which classes confused with each other sit together, so confusions show as blocks near
    the diagonal. Average-linkage agglomerative clustering of the symmetrised confusion rates; each merge joins
    the two chains at their most confused ends. Deterministic, and instant for 101 classes."""
    n = len(confusion)
    support = confusion.sum(1, keepdims=True)
    rates = np.divide(confusion, support, out=np.zeros(confusion.shape), where=support > 0)
    affinity = rates + rates.T
    link = affinity.copy()  # between chains, indexed by each chain's first member; -inf once merged away
    np.fill_diagonal(link, -np.inf)
    chains = {i: [i] for i in range(n)}
    while len(chains) > 1:
        a, b = np.unravel_index(np.argmax(link), link.shape)  # the first maximum, so a < b and ties are stable
        left, right = chains[a], chains.pop(b)
        joins = [left + right, left + right[::-1], left[::-1] + right, left[::-1] + right[::-1]]
        chains[a] = max(joins, key=lambda chain: affinity[chain[len(left) - 1], chain[len(left)]])
        link[a] = (len(left) * link[a] + len(right) * link[b]) / (len(left) + len(right))
        link[:, a] = link[a]
        link[b], link[:, b], link[a, a] = -np.inf, -np.inf, -np.inf
    return chains[0]
