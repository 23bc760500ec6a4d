"""Error analysis of a trained model, as files and pictures, and the `python -m food101hf.report` command (which
also runs the dataset audit, food101hf.audit).

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
    from food101hf.cli import parse_early
    from food101hf.parsers import report_parser

    parse_early(report_parser)

import csv
import dataclasses
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import torch

from timm.data import resolve_model_data_config

from .analysis import confused_pairs, confusion_matrix, per_class_table
from .audit import audit_dataset, audit_markdown, write_audit
from .checkpoint import checkpoint_root, resume_advice
from .cli import run, setup_logging
from .config import TrainConfig, local_dataset
from .data import check_classes, eval_dataset
from .engine import create_accelerator, evaluate_logits, ranked_predictions, score_logits
from .errors import UsageError
from .images import DecodeRule, open_rgb
from .metrics import describe_scores, small_eval_warning
from .model import load_trained
from .outputs import read_recipes, reuse_layout, trained_folder
from .parsers import report_parser
from .runtime import set_num_threads
from .storage import staged_writes
from .transforms import build_transform, with_transform

PER_CLASS_FIELDS = ["label", "accuracy", "support", "precision", "recall", "f1"]
PAIR_FIELDS = ["true_label", "predicted_label", "count", "share_of_true_class"]
MISTAKES_SHOWN = 24
THUMBNAIL = 400  # px, the longer side of a picture of a mistake; a tile is 250 px wide

logger = logging.getLogger(__name__)


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
    low, high = metrics["top1_ci95"]
    top5 = f", top-5 {metrics['top5']:.2%}" if "top5" in metrics else ""
    return (f"{metrics['eval_split']}, {metrics['num_eval_samples']} images at {metrics['image_size']} px{tta}: "
            f"**top-1 {metrics['top1']:.2%}** (95% interval {low:.1%}-{high:.1%}){top5}, loss "
            f"{metrics['eval_loss']:.4f}")


def _warning(metrics: dict) -> list[str]:
    return [f"**Warning:** {metrics['eval_warning']}.", ""] if "eval_warning" in metrics else []


@torch.inference_mode()
def write_report(accelerator, model, eval_loader, label_names: list[str], out_dir: str | Path, image_size: int,
                 tta: bool = False, eval_split: str = "validation", title: str | None = None,
                 evaluation: tuple[torch.Tensor, torch.Tensor] | None = None) -> dict:
    """Evaluate `model` on `eval_loader` (prepared by `accelerator`, unshuffled, built with `with_transform` over a
    `datasets` Dataset with `data`'s `image` and `label` columns) and write the report into `out_dir`. Call it on
    every process: each evaluates its shard and all receive the gathered logits; the main process writes.
    `evaluation`, the (logits, labels) of `engine.evaluate_logits` for this model and loader (training's last
    evaluation), is used instead of evaluating again. Returns the metrics."""
    logits, labels = evaluation if evaluation is not None else evaluate_logits(accelerator, model, eval_loader,
                                                                               desc="report", tta=tta)
    metrics = score_logits([(logits, labels)]) | {"image_size": image_size, "tta": tta, "eval_split": eval_split}
    counts = np.bincount(labels.numpy(), minlength=len(label_names)).tolist()
    if warning := small_eval_warning(metrics["top1_ci95"], counts):
        metrics["eval_warning"] = warning
    if not accelerator.is_main_process:
        return metrics

    raw = eval_loader.dataset.with_format(None)  # the untransformed rows: original images and labels
    labels = labels.numpy()
    if not np.array_equal(labels, raw["label"]):
        raise RuntimeError("the gathered evaluation is not in dataset order; is the eval loader shuffled?")
    predictions = ranked_predictions(logits)[:, 0].numpy()
    confusion = confusion_matrix(labels, predictions, len(label_names))
    per_class, pairs = per_class_table(confusion, label_names), confused_pairs(confusion, label_names)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False) + "\n")
    _write_csv(out_dir / "per_class.csv", PER_CLASS_FIELDS, per_class)
    _write_csv(out_dir / "confused_pairs.csv", PAIR_FIELDS, pairs)

    from .plots import caption, plot_confusion, plot_mistakes  # matplotlib (~0.5 s) only once a picture is drawn

    title = title or "Error analysis"
    # the wrong predictions the model was surest about, shown as the original images
    confidence = logits.softmax(-1).max(-1).values.numpy()
    wrong = np.flatnonzero(predictions != labels)
    shown = wrong[np.argsort(-confidence[wrong], kind="stable")][:MISTAKES_SHOWN]
    # a phone photo decoded at 1/4 or 1/8: its short side still at least the thumbnail's longer one
    images = [open_rgb(raw[int(i)]["image"], DecodeRule(short_side=THUMBNAIL)) for i in shown]
    for image in images:
        image.thumbnail((THUMBNAIL, THUMBNAIL))  # in place
    captions = [caption(label_names[labels[i]], label_names[predictions[i]], confidence[i]) for i in shown]
    pictures = {
        "confusion_matrix.png": ("confusion matrix", plot_confusion(
            confusion, label_names, out_dir / "confusion_matrix.png", f"{title}: top-1 {metrics['top1']:.2%}"),
            "Rows: true class; columns: predicted class"),
        "confident_mistakes.png": ("most confidently wrong images", plot_mistakes(
            images, captions, out_dir / "confident_mistakes.png",
            f"The {len(shown)} most confidently wrong of {len(wrong)} misclassified images"),
            f"The {len(shown)} misclassified images the model was surest about"),
    }
    body = [f"# {title}", "", _headline(metrics) + ".", "", *_warning(metrics),
            "Per-class accuracy weighted by the number of images equals top-1: both count the same predictions.",
            "", _analysis_markdown(per_class, pairs, pictures, prefix="", level="##")]
    (out_dir / "report.md").write_text("\n".join(body), encoding="utf-8")
    card = ["## Error analysis", "", f"From `report/` ({_headline(metrics)}).", "",
            _analysis_markdown(per_class, pairs, pictures, prefix="report/", level="###")]
    (out_dir / "card.md").write_text("\n".join(card), encoding="utf-8")
    return metrics


def report_run(accelerator, cfg, model, eval_loader, label_names: list[str], out: Path, eval_split: str,
               evaluation: tuple[torch.Tensor, torch.Tensor] | None = None) -> None:
    """train.py's and polish.py's report of the final model into OUT/report/ (on every process, before
    end_training), from `evaluation` (the final model's (logits, labels) on eval_loader) when given; with
    --no-report, an earlier run's report/ is removed instead: it describes other weights."""
    if cfg.report:
        with staged_writes(out / "report", resume_advice(checkpoint_root(out)), files="the report") as stage:
            write_report(accelerator, model, eval_loader, label_names, stage, cfg.image_size,
                         eval_split=eval_split, title=f"Error analysis of {out.name}", evaluation=evaluation)
    elif accelerator.is_main_process:
        shutil.rmtree(out / "report", ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = report_parser()
    args = parser.parse_args(argv)
    setup_logging()
    if not args.audit and not (args.model and args.output_dir):
        raise UsageError("a report needs --model and --output-dir (or pass --audit) "
                         "(`python -m food101hf.report --help` lists the flags)")
    cfg = TrainConfig(dataset=args.dataset, dataset_config=args.dataset_config, image_column=args.image_column,
                      label_column=args.label_column,
                      val_fraction=args.val_fraction, seed=args.seed, max_eval_samples=args.max_eval_samples,
                      batch_size=args.batch_size, num_workers=args.num_workers,
                      mixed_precision=args.mixed_precision, output_dir=args.output_dir or ".")
    if args.audit:
        result = audit_dataset(cfg)
        print(audit_markdown(result))
        if args.output_dir:
            write_audit(result, Path(args.output_dir))
        return 0

    threads = set_num_threads()
    logger.info("%d torch thread(s) per process (%s)", threads.count, threads.reason)
    accelerator = create_accelerator(cfg)
    folder = trained_folder(args.model)
    recipe = read_recipes(folder)[0] if (folder / "train_config.yaml").is_file() else {}
    # on the model's own dataset, its config and columns as its run read them (unless flags say otherwise)
    cfg = reuse_layout(dataclasses.replace(cfg, dataset=local_dataset(args.dataset)), recipe, folder)
    model = load_trained(folder).to(memory_format=torch.channels_last)
    label_names = list(model.pretrained_cfg["label_names"])
    with accelerator.main_process_first():  # one process generates/caches the dataset; the others read it
        dataset, dataset_labels, eval_split = eval_dataset(cfg, args.split)
    check_classes(args.dataset, dataset_labels, args.model, label_names, "report on the dataset it was trained on")
    data_config = resolve_model_data_config(model)
    image_size = args.image_size or data_config["input_size"][-1]
    transform = build_transform(data_config, image_size, is_training=False, normalize=False)
    loader = torch.utils.data.DataLoader(with_transform(dataset, transform),
                                         batch_size=cfg.batch_size, num_workers=cfg.num_workers, shuffle=False)
    model, loader = accelerator.prepare(model, loader)
    with staged_writes(args.output_dir, "Free space (or pass another --output-dir) and rerun", "the report") as stage:
        metrics = write_report(accelerator, model, loader, label_names, stage, image_size, tta=args.tta,
                               eval_split=eval_split, title=f"Error analysis of {args.model}")
    if accelerator.is_main_process:
        if "eval_warning" in metrics:
            logger.warning(metrics["eval_warning"])
        print(f"{describe_scores(metrics)}; report written to {Path(args.output_dir).resolve()}")
    accelerator.end_training()  # takes the process group down cleanly under torchrun
    return 0


if __name__ == "__main__":
    run(main)
