"""The model card (README.md) of an output folder: what was trained, on what, how, with what result, and how to use it.

Built from the folder's own files only: config.json, metrics.json, train_config.yaml (base_config.yaml after a
polish) and report/ (the error analysis), with the template `templates/model_card.md`. `publish.write_outputs`
writes it after a run; `publish.push_folder` rebuilds it with the repo id before every push.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData

from .cli import counted
from .hub_access import is_repo_id
from .outputs import dataset_kind, dataset_name, polish_verdict, read_recipes

PROJECT_LICENSE = "apache-2.0"
PRECISION = {"no": "fp32 (no mixed precision)", "bf16": "bf16 mixed precision", "fp16": "fp16 mixed precision"}
DEMO_DESCRIPTION = ("food101hf's generated demo dataset: synthetic drawings of 10 Food-101 dishes (a plate on a table "
                    "with the dish painted as coloured shapes and textures), not photographs")

CARD_TEMPLATE = Path(__file__).with_name("templates") / "model_card.md"  # Jinja, as huggingface_hub's own


def pretrained_checkpoint(recipe: dict, base: dict | None = None) -> str | None:
    """The timm checkpoint the weights ultimately started from (e.g. 'resnet18.a1_in1k'), or None from scratch.
    A polished model started from its init's start."""
    if "init" in recipe:
        return pretrained_checkpoint(base, None) if base else None
    return recipe["model"] if recipe.get("pretrained") else None


def base_model(recipe: dict, base: dict | None) -> str | None:
    """The card's `base_model`: a polished model's init repo, else the timm checkpoint on the Hub; None from
    scratch (the Hub would otherwise list the model as a fine-tune of a checkpoint it never saw)."""
    if isinstance(recipe.get("init"), str) and is_repo_id(recipe["init"]):
        return recipe["init"].partition("@")[0]
    checkpoint = pretrained_checkpoint(recipe, base)
    return f"timm/{checkpoint}" if checkpoint else None


def model_license(recipe: dict, base: dict | None = None) -> str:
    """The licence of the starting checkpoint (timm's pretrained_cfg: e.g. cc-by-nc-4.0 for the fb_swsl tags),
    else this project's."""
    checkpoint = pretrained_checkpoint(recipe, base)
    if checkpoint:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(checkpoint)
        if cfg is not None and cfg.license:
            return cfg.license
    return PROJECT_LICENSE


def _start_text(recipe: dict, base: dict | None) -> str:
    checkpoint = pretrained_checkpoint(recipe, base)
    start = (f"fine-tuned from timm's ImageNet checkpoint [`{checkpoint}`](https://huggingface.co/timm/{checkpoint})"
             if checkpoint else "trained from scratch (random initialisation, no pretrained weights)")
    if "init" in recipe:
        start = f"polished at {recipe['image_size']} px from `{dataset_name(recipe['init'])}`, which was {start}"
    return start


def _hub_link(dataset: str, config: str | None) -> str:
    """A Hub dataset as a link, with the config it was read with unless that is the only one, `default`."""
    link = f"[{dataset}](https://huggingface.co/datasets/{dataset})"
    return link + (f" (config `{config}`)" if config and config != "default" else "")


def _dataset_text(dataset, config: str | None) -> str:
    kind = dataset_kind(dataset)
    if kind == "demo":
        return DEMO_DESCRIPTION
    if kind == "hub":
        return _hub_link(dataset, config)
    return f"a local image folder, `{dataset_name(dataset)}` (not published)"


def _dataset_short(dataset, config: str | None) -> str:
    kind = dataset_kind(dataset)
    if kind == "hub":
        return _hub_link(dataset, config)
    return {"demo": "food101hf's synthetic demo drawings", "local": f"a local image folder, `{dataset_name(dataset)}`"
            }[kind]


def _run_text(metrics: dict) -> str:
    """What ran, from metrics.json: epochs, updates, time, precision, hardware (older folders lack some)."""
    parts = [counted(metrics["epoch"], "epoch") if "epoch" in metrics else None,
             f"{metrics['optimizer_updates']} optimizer updates" if "optimizer_updates" in metrics else None,
             f"{metrics['train_seconds'] / 60:.1f} min of training" if "train_seconds" in metrics else None,
             f"{metrics['train_images_per_second']} img/s" if "train_images_per_second" in metrics else None,
             PRECISION.get(metrics.get("mixed_precision"), f"precision {metrics.get('mixed_precision')}")
             if "mixed_precision" in metrics else None,
             f"on {metrics['hardware']}" if "hardware" in metrics else None]
    return ", ".join(p for p in parts if p) + "." if any(parts) else "not recorded."


def _recipe_summary(recipe: dict) -> str:
    frozen = recipe.get("freeze") or "none"
    return (f"frozen: `{frozen}`; {counted(recipe['epochs'], 'epoch')} at {recipe['image_size']} px, "
            f"{recipe['opt']} (lr {recipe['lr']}, weight decay {recipe['weight_decay']}), cosine schedule with "
            f"{counted(recipe['warmup_epochs'], 'warmup epoch')}, Mixup {recipe['mixup']} / CutMix "
            f"{recipe['cutmix']}, label smoothing {recipe['smoothing']}, gradient clipping {recipe['clip_grad']}.")


def _polish_summary(recipe: dict, base: dict | None, metrics: dict) -> str:
    """polish.py's recipe (its config has `init`), with the before/after numbers and how the base was trained."""
    bn = (f"BatchNorm statistics re-estimated on {recipe['bn_batches']} batches of {recipe['batch_size']} training "
          f"images (eval preprocessing)" if recipe.get("bn_reestimate") else "BatchNorm statistics kept")
    text = f"Polished from `{dataset_name(recipe['init'])}` at {recipe['image_size']} px: {bn}"
    if recipe["epochs"]:
        text += (f", then {counted(recipe['epochs'], 'epoch')} of fine-tuning, frozen "
                 f"`{recipe.get('freeze') or 'none'}`, "
                 f"{recipe['opt']} (lr {recipe['lr']} on a cosine to {recipe['min_lr']}, weight decay "
                 f"{recipe['weight_decay']}), Mixup {recipe['mixup']} / CutMix {recipe['cutmix']}, label smoothing "
                 f"{recipe['smoothing']}")
    text += "."
    if "before_polish" in metrics:
        text += (f" Top-1 at {recipe['image_size']} px before the fine-tune: "
                 f"{metrics['before_polish']['top1'] * 100:.2f}%, after: {metrics['top1'] * 100:.2f}%.")
    if base:
        how = _polish_summary(base, None, {}) if "init" in base else _recipe_summary(base)
        text += f" The base model ({base['image_size']} px, recipe in `base_config.yaml`): {how}"
    return text


def _intended_use(dataset) -> str:
    kind = dataset_kind(dataset)
    if kind == "demo":
        return ("A demonstration of the food101hf pipeline (training, export, serving) that runs offline; not for "
                "classifying food.")
    what = "Food-101's 101 dishes" if kind == "hub" and "food101" in dataset else "the classes of its training data"
    return (f"Classifying photos of a single dish among {what}, for experiments, demos and as a starting point for "
            f"fine-tuning. Accuracy on your photos can differ from the table above when they look unlike the "
            f"training data (lighting, framing, several dishes in one picture).")


def _confusions(folder: Path, split: str, n: int = 3) -> str:
    """The most confused pairs of the error analysis, as a sentence; empty without report/."""
    path = folder / "report" / "confused_pairs.csv"
    if not path.is_file():
        return ""
    with path.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))[:n]
    if not rows:
        return f"\nIn the error analysis below, no {split} image was misclassified.\n"
    pairs = "; ".join(f"{r['true_label']} taken for {r['predicted_label']} ({counted(int(r['count']), 'image')}, "
                      f"{float(r['share_of_true_class']):.0%} of its class)" for r in rows)
    return f"\nIts most frequent mistakes on the {split} split: {pairs}.\n"


def build_card(folder: str | Path, repo_id: str | None = None, revision: str | None = None,
               removed: list[str] = ()) -> ModelCard:
    """The model card for an output folder, for `repo_id` (the snippets then load from the Hub) or the folder
    itself; `removed`: the repo's files the push deletes (`publish.stale_files`), which the card lists. The
    metadata (library, licence, base_model only when there is one, datasets only for a Hub dataset, a model-index
    with top-1 (and top-5 for more than 5 classes), the dataset's config and split and the resolution) is what the
    Hub indexes. The results show top-1's 95% interval, and say so when the eval split is too small to tell models
    apart (metrics.json's eval_warning) or a polish ended below its init (worse_than_init)."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    recipe, base = read_recipes(folder)
    dataset = recipe["dataset"]
    kind, name = dataset_kind(dataset), dataset_name(dataset)
    dataset_config = recipe.get("dataset_config") if kind == "hub" else None  # as the run read it
    split, size = metrics.get("eval_split", "validation"), metrics["image_size"]
    ref = f"{repo_id}@{revision}" if repo_id and revision else repo_id
    card_data = ModelCardData(
        library_name="timm",
        license=model_license(recipe, base),
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", "transformers", "food101hf", "food"],
        datasets=[dataset] if kind == "hub" else None,
        base_model=base_model(recipe, base),
        model_name=repo_id or folder.name,
        eval_results=[
            EvalResult(task_type="image-classification", task_name="Image Classification",
                       dataset_type=dataset if kind == "hub" else "imagefolder",
                       dataset_name="food101hf demo (synthetic drawings)" if kind == "demo" else name,
                       dataset_config=dataset_config, dataset_split=split, dataset_args={"image_size": size},
                       metric_type="accuracy", metric_name=metric_name, metric_value=round(metrics[key], 4),
                       metric_config=f"{size}px", verified=False)
            for key, metric_name in (("top1", "Top-1 accuracy"), ("top5", "Top-5 accuracy")) if key in metrics
        ],
    )
    summary = _polish_summary(recipe, base, metrics) if "init" in recipe else _recipe_summary(recipe)
    return ModelCard.from_template(
        card_data, template_str=CARD_TEMPLATE.read_text(encoding="utf-8"),
        title=repo_id or folder.name, architecture=config["architecture"], num_classes=config["num_classes"],
        dataset_text=_dataset_text(dataset, dataset_config),
        dataset_short=_dataset_short(dataset, dataset_config),
        start_text=_start_text(recipe, base), demo=kind == "demo",
        image_size=size, crop_pct=config["pretrained_cfg"].get("crop_pct"), eval_split=split,
        num_eval_samples=metrics["num_eval_samples"], top1=metrics["top1"], top5=metrics.get("top5"),
        top1_ci95=metrics.get("top1_ci95"), warnings=[w for w in (metrics.get("eval_warning"), polish_verdict(
            metrics, dataset_name(recipe["init"]) if "init" in recipe else None)) if w],
        eval_loss=metrics["eval_loss"], extra_results=metrics.get("card_extra", ""), run_text=_run_text(metrics),
        recipe_summary=summary, intended_use=_intended_use(dataset), confusions=_confusions(folder, split),
        error_analysis=(folder / "report" / "card.md").read_text(encoding="utf-8")
        if (folder / "report" / "card.md").is_file() else "",
        k=min(5, config["num_classes"]), timm_id=f"hf-hub:{ref}" if ref else f"local-dir:{folder}",
        model_ref=ref or str(folder), repo_or_folder=repo_id or str(folder),
        revision_arg=f', revision="{revision}"' if repo_id and revision else "",
        recipe_yaml=yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True),
        removed=", ".join(f"`{name}`" for name in removed),
    )
