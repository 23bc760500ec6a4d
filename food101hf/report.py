"""Error analysis of a trained model, as files and pictures; and a dataset audit.

    python -m food101hf.report --model outputs/demo --dataset demo --output-dir outputs/demo/report
    python -m food101hf.report --model org/name --dataset ethz/food101 --split validation --tta --output-dir R
    torchrun --nproc_per_node 2 -m food101hf.report --model ... --output-dir R    # evaluation shared by processes
    python -m food101hf.report --audit --dataset ethz/food101 [--output-dir R]    # what the dataset holds

The report folder holds metrics.json, per_class.csv, confused_pairs.csv, confusion_matrix.png,
confident_mistakes.png, report.md (headline numbers, top rows, the pictures) and card.md (the section the model
card shows). train.py writes it into OUTPUT_DIR/report/ after training (--no-report skips it).
"""

from __future__ import annotations

if __name__ == "__main__":  # answer --help and refuse bad flags before torch and matplotlib load
    from food101hf.cli import parse_early, report_parser

    parse_early(report_parser)

import csv
import json
import logging
import math
import shutil
import textwrap
from pathlib import Path

import numpy as np
import torch

from .checkpoint import checkpoint_root, resume_advice
from .data import DatasetError
from .decode import open_rgb
from .engine import evaluate_logits, ranked_predictions, score_logits
from .storage import staged_writes

PER_CLASS_FIELDS = ["label", "accuracy", "support", "precision", "recall", "f1"]
PAIR_FIELDS = ["true_label", "predicted_label", "count", "share_of_true_class"]
DPI = 100
MISTAKES_SHOWN = 24

logger = logging.getLogger(__name__)


# ---- pure tables: integer labels and predictions in, rows out ----

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


# ---- pictures ----

def plot_confusion(confusion: np.ndarray, label_names: list[str], path: Path, title: str) -> tuple[int, int]:
    """The confusion matrix in cluster order, every class labelled: 1000 px square up to ~47 classes, 1866 px
    for 101. The diagonal (accuracy) is muted grey so the confusions, coloured by the share of the true class
    on a log scale, stand out. Returns the picture's (width, height) in pixels."""
    from matplotlib.colors import LogNorm  # matplotlib (~0.5 s of imports) only once a picture is drawn
    from matplotlib.figure import Figure  # no pyplot: no global backend or figure state, nothing needs a display
    from matplotlib.ticker import PercentFormatter

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
    names = [label_names[i] for i in order]
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
    fig.colorbar(image, ax=ax, shrink=0.4, label="share of the true class", format=PercentFormatter(1))
    fig.savefig(path, dpi=DPI)
    return pixels, pixels


TILE = 250  # px per image column; a caption line holds CAPTION_CHARS characters of 9 pt DejaVu Sans in it
CAPTION_CHARS = 30


def mistakes_figure(images: list, captions: list[str], title: str, cols: int = 6) -> Figure:
    """A grid of images, each with its caption (at most four lines, see `_caption`); a single line of text when
    there are none. Every tile has the same room for its caption, so captions never overlap the row above."""
    from matplotlib.figure import Figure

    rows = max(1, math.ceil(len(images) / cols))
    width, height = TILE * cols, 300 * rows + 60
    fig = Figure(figsize=(width / DPI, height / DPI), dpi=DPI, layout="constrained")
    fig.suptitle(title, fontsize=12)
    if not images:
        fig.text(0.5, 0.5, "every image was classified correctly", ha="center", va="center", fontsize=14)
    for i, ax in enumerate(fig.subplots(rows, cols, squeeze=False).flat):
        ax.set_axis_off()
        if i < len(images):
            ax.imshow(images[i])
            ax.set_title(captions[i], fontsize=9, loc="left", wrap=False)
    return fig


def plot_mistakes(images: list, captions: list[str], path: Path, title: str, cols: int = 6) -> tuple[int, int]:
    """`mistakes_figure` saved to `path`. Returns the picture's (width, height) in pixels."""
    fig = mistakes_figure(images, captions, title, cols)
    fig.savefig(path, dpi=DPI)
    width, height = fig.get_size_inches() * DPI
    return round(width), round(height)


def _caption(true: str, predicted: str, confidence: float) -> str:
    """Two lines at most per class name, wrapped at word boundaries (Food-101's names read with spaces:
    `lobster_roll_sandwich` -> "lobster roll sandwich"), each line short enough for its tile."""
    def wrap(prefix: str, name: str, suffix: str = "") -> str:
        lines = textwrap.wrap(prefix + name.replace("_", " ") + suffix, CAPTION_CHARS, max_lines=2,
                              placeholder="…", break_long_words=True)
        return "\n".join(lines)

    return f"{wrap('true: ', true)}\n{wrap('predicted: ', predicted, f' ({confidence:.0%})')}"


# ---- files ----

def _write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows({k: ("" if v is None else v) for k, v in row.items()} for row in rows)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _class_table(rows: list[dict]) -> list[str]:
    lines = ["| class | accuracy | images | precision | F1 |", "|---|---|---|---|---|"]
    return lines + [f"| {r['label']} | {_pct(r['accuracy'])} | {r['support']} | {_pct(r['precision'])} | "
                    f"{_pct(r['f1'])} |" for r in rows]


def _analysis_markdown(per_class: list[dict], pairs: list[dict], pictures: dict, prefix: str, level: str) -> str:
    """The tables' top rows and the pictures, links relative to `prefix`."""
    scored = [row for row in per_class if row["accuracy"] is not None]  # classes with images here
    lines = [f"{level} Most confused pairs", ""]
    if pairs:
        lines += [f"The {min(10, len(pairs))} largest of {len(pairs)} (true, predicted) pairs with at least one "
                  f"mistake ([all]({prefix}confused_pairs.csv)):", "",
                  "| true class | predicted as | images | share of the true class |", "|---|---|---|---|"]
        lines += [f"| {p['true_label']} | {p['predicted_label']} | {p['count']} | "
                  f"{_pct(p['share_of_true_class'])} |" for p in pairs[:10]]
    else:
        lines += ["None: every image was classified correctly."]
    lines += ["", f"{level} Worst and best classes", ""]
    if len(scored) > 10:
        lines += [f"Five of each, of {len(scored)} ([all]({prefix}per_class.csv)). Worst:", ""]
        lines += _class_table(scored[:5]) + ["", "Best:", ""] + _class_table(scored[::-1][:5])
    else:
        lines += [f"All {len(scored)}, worst first ([csv]({prefix}per_class.csv)):", ""] + _class_table(scored)
    for name, (alt, (width, height), what) in pictures.items():
        lines += ["", f"![{alt}]({prefix}{name})", "", f"*{what} ({width}×{height} px).*"]
    return "\n".join(lines) + "\n"


def _headline(metrics: dict) -> str:
    tta = ", flip TTA" if metrics["tta"] else ""
    return (f"{metrics['eval_split']}, {metrics['num_eval_samples']} images at {metrics['image_size']} px{tta}: "
            f"**top-1 {metrics['top1']:.2%}**, top-5 {metrics['top5']:.2%}, loss {metrics['eval_loss']:.4f}")


@torch.inference_mode()
def write_report(accelerator, model, eval_loader, label_names: list[str], out_dir: str | Path, image_size: int,
                 tta: bool = False, eval_split: str = "validation", image_column: str = "image",
                 label_column: str = "label", title: str | None = None,
                 evaluation: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Evaluate `model` on `eval_loader` (prepared by `accelerator`, unshuffled, built over a `datasets`
    Dataset with `with_transform`) and write the report into `out_dir`. Call it on every process: each
    evaluates its shard and all receive the gathered logits; the main process writes. `evaluation`, the
    (logits, labels) of `engine.evaluate_logits` for this model and loader (training's last evaluation), is
    used instead of evaluating again. Returns the metrics."""
    logits, labels = evaluation if evaluation is not None else evaluate_logits(accelerator, model, eval_loader,
                                                                               desc="report", tta=tta)
    metrics = score_logits([(logits, labels)]) | {"image_size": image_size, "tta": tta, "eval_split": eval_split}
    if not accelerator.is_main_process:
        return metrics

    raw = eval_loader.dataset.with_format(None)  # the untransformed rows: original images and labels
    labels = labels.numpy()
    if not np.array_equal(labels, raw[label_column]):
        raise RuntimeError("the gathered evaluation is not in dataset order; is the eval loader shuffled?")
    predictions = ranked_predictions(logits)[:, 0].numpy()
    confusion = confusion_matrix(labels, predictions, len(label_names))
    per_class, pairs = per_class_table(confusion, label_names), confused_pairs(confusion, label_names)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    _write_csv(out_dir / "per_class.csv", PER_CLASS_FIELDS, per_class)
    _write_csv(out_dir / "confused_pairs.csv", PAIR_FIELDS, pairs)

    title = title or "Error analysis"
    # the wrong predictions the model was surest about, shown as the original images
    confidence = logits.softmax(-1).max(-1).values.numpy()
    wrong = np.flatnonzero(predictions != labels)
    shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:MISTAKES_SHOWN]
    images = [open_rgb(raw[int(i)][image_column]) for i in shown]
    for image in images:
        image.thumbnail((400, 400))  # in place; a tile is 250 px wide
    captions = [_caption(label_names[labels[i]], label_names[predictions[i]], confidence[i]) for i in shown]
    pictures = {
        "confusion_matrix.png": ("confusion matrix", plot_confusion(
            confusion, label_names, out_dir / "confusion_matrix.png", f"{title}: top-1 {metrics['top1']:.2%}"),
            "Rows: true class; columns: predicted class"),
        "confident_mistakes.png": ("most confidently wrong images", plot_mistakes(
            images, captions, out_dir / "confident_mistakes.png",
            f"The {len(shown)} most confidently wrong of {len(wrong)} misclassified images"),
            f"The {len(shown)} misclassified images the model was surest about"),
    }
    body = [f"# {title}", "", _headline(metrics) + ".", "",
            "Per-class accuracy weighted by the number of images equals top-1: both count the same predictions.",
            "", _analysis_markdown(per_class, pairs, pictures, prefix="", level="##")]
    (out_dir / "report.md").write_text("\n".join(body), encoding="utf-8")
    card = ["## Error analysis", "", f"From `report/` ({_headline(metrics)}).", "",
            _analysis_markdown(per_class, pairs, pictures, prefix="report/", level="###")]
    (out_dir / "card.md").write_text("\n".join(card), encoding="utf-8")
    return metrics


# ---- command line ----

def _eval_dataset(cfg, split: str | None):
    """(dataset, label names, where it comes from): `split` of cfg.dataset, by default validation or test, else
    the seeded stratified hold-out of train that train.py evaluated on. Unreadable images are dropped and named."""
    from datasets import ClassLabel

    from .data import EVAL_SPLITS, drop_unreadable, load_dataset_dict, load_splits

    found = load_dataset_dict(cfg)
    split = split or next((name for name in EVAL_SPLITS if name in found), None)
    if split is None:
        splits = load_splits(cfg)
        return splits.eval, splits.label_names, splits.eval_split
    if split not in found:
        raise DatasetError(f"{cfg.dataset}: no split {split!r} (found {', '.join(found)})")
    dataset = found[split]
    feature = dataset.features.get(cfg.label_column)
    if not isinstance(feature, ClassLabel):
        raise DatasetError(f"{cfg.dataset}/{split}: column {cfg.label_column!r} is not a ClassLabel")
    if cfg.max_eval_samples:  # the same seeded subset as train.py's: Food-101's splits are sorted by class
        dataset = dataset.shuffle(seed=cfg.seed).select(range(min(cfg.max_eval_samples, len(dataset))))
    dataset, skipped = drop_unreadable(dataset, cfg.image_column, split, cfg.num_workers)
    for item in skipped:
        logger.warning("skipping %s (%s): %s", item["file"], split, item["error"])
    return dataset, list(feature.names), split


def report_run(accelerator, cfg, model, eval_loader, label_names: list[str], out: Path, eval_split: str,
               evaluation: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """train.py's and polish.py's report of the final model into OUT/report/ (on every process, before
    end_training), from `evaluation` (the final model's (logits, labels) on eval_loader) when given; with
    --no-report, an earlier run's report/ is removed instead: it describes other weights."""
    if cfg.report:
        with staged_writes(out / "report", resume_advice(checkpoint_root(out)), files="the report") as stage:
            write_report(accelerator, model, eval_loader, label_names, stage, cfg.image_size,
                         eval_split=eval_split, image_column=cfg.image_column, label_column=cfg.label_column,
                         title=f"Error analysis of {out.name}", evaluation=evaluation)
    elif accelerator.is_main_process:
        shutil.rmtree(out / "report", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    from .cli import report_parser, setup_logging
    from .config import TrainConfig

    parser = report_parser()
    args = parser.parse_args(argv)
    setup_logging()
    if not args.audit and not (args.model and args.output_dir):
        parser.error("a report needs --model and --output-dir (or pass --audit)")
    cfg = TrainConfig(dataset=args.dataset, image_column=args.image_column, label_column=args.label_column,
                      val_fraction=args.val_fraction, seed=args.seed, max_eval_samples=args.max_eval_samples,
                      batch_size=args.batch_size, num_workers=args.num_workers,
                      mixed_precision=args.mixed_precision, output_dir=args.output_dir or ".")
    if args.audit:
        from .audit import audit_dataset, audit_markdown, write_audit

        result = audit_dataset(cfg)
        print(audit_markdown(result))
        if args.output_dir:
            write_audit(result, Path(args.output_dir))
        return 0

    from timm.data import resolve_model_data_config

    from .data import build_transform, with_transform
    from .engine import create_accelerator
    from .model import load_trained
    from .runtime import set_num_threads

    threads = set_num_threads()
    logger.info("%d torch thread(s) per process (%s)", threads.count, threads.reason)
    accelerator = create_accelerator(cfg)
    model = load_trained(args.model).to(memory_format=torch.channels_last)
    label_names = list(model.pretrained_cfg["label_names"])
    with accelerator.main_process_first():  # one process generates/caches the dataset; the others read it
        dataset, dataset_labels, eval_split = _eval_dataset(cfg, args.split)
    if dataset_labels != label_names:
        raise DatasetError(f"{args.dataset} labels its classes differently from the model: dataset "
                           f"{dataset_labels[:5]}…, model {label_names[:5]}… ({len(dataset_labels)} vs "
                           f"{len(label_names)} classes)")
    data_config = resolve_model_data_config(model)
    image_size = args.image_size or data_config["input_size"][-1]
    transform = build_transform(data_config, image_size, is_training=False, normalize=False)
    loader = torch.utils.data.DataLoader(with_transform(dataset, transform, cfg.image_column, cfg.label_column),
                                         batch_size=cfg.batch_size, num_workers=cfg.num_workers, shuffle=False)
    model, loader = accelerator.prepare(model, loader)
    with staged_writes(args.output_dir, "Free space (or pass another --output-dir) and rerun", "the report") as stage:
        metrics = write_report(accelerator, model, loader, label_names, stage, image_size, tta=args.tta,
                               eval_split=eval_split, image_column=cfg.image_column,
                               label_column=cfg.label_column, title=f"Error analysis of {args.model}")
    if accelerator.is_main_process:
        print(f"top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}; report written to "
              f"{Path(args.output_dir).resolve()}")
    accelerator.end_training()  # takes the process group down cleanly under torchrun
    return 0


if __name__ == "__main__":
    from food101hf import report  # the package's module (not this __main__ copy): its errors are the ones run knows
    from food101hf.cli import run

    run(report.main)
