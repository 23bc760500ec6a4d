"""The splits a run trains and evaluates on, from a Hub dataset id (``ethz/food101``, through
``datasets.load_dataset``), a local image folder (``food101hf.folders.load_folder``) or ``demo``; images are
decoded on access (`transforms.with_transform`), and every one is checked once before training
(`drop_unreadable`).

    splits = load_splits(cfg)          # Splits(train, eval, label_names, eval_split, skipped)
    dataset, names, split = eval_dataset(cfg, "test")   # one split for a report, by train.py's rules
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, load_dataset
from datasets import Image as ImageFeature
from datasets.exceptions import DatasetNotFoundError
from huggingface_hub import constants

from .config import TrainConfig
from .demo import default_demo_dir, make_demo
from .errors import DatasetError
from .folders import load_folder
from .hub_access import hub_errors, is_repo_id
from .images import check_image
from .runtime import usable_cores

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("validation", "test")  # Food-101 on the Hub calls its test set "validation"


@dataclass
class Splits:
    train: Dataset
    eval: Dataset
    label_names: list[str]
    eval_split: str  # where the eval images come from, for logs and the model card
    skipped: list[dict] = field(default_factory=list)  # unreadable files: split, file, error

    def identity(self) -> dict:
        """What the run trains and evaluates on, for the checkpoint's run signature: each split's size and its
        `datasets` fingerprint. The fingerprint hashes the data files behind the split (for local files their
        paths and modification times, for Hub files their ETags) and every transform applied since (the
        --max-*-samples subset, dropped unreadable files), so adding, removing or editing a photo changes it."""
        return {name: {"images": len(split), "fingerprint": split._fingerprint}
                for name, split in (("train", self.train), ("eval", self.eval))}


def example_file(dataset: Dataset, image_column: str = "image") -> str | None:
    """The path of the dataset's first image if it is a file on this machine (a local folder, the demo), else
    None (a Hub dataset keeps images as bytes in parquet)."""
    if len(dataset) == 0:
        return None
    path = dataset.cast_column(image_column, ImageFeature(decode=False))[0][image_column].get("path")
    return path if path and Path(path).is_file() else None

def _error(value) -> str:
    """'' for an image the bad-file check passes, else its error as 'Type: message'."""
    try:
        check_image(value)
    except Exception as e:  # noqa: BLE001 - OSError, SyntaxError, DecompressionBombError (not an OSError), ...
        return f"{type(e).__name__}: {e}"
    return ""


def _check_images(batch: dict, image_column: str) -> dict:
    # threads, not processes: Pillow decodes with the GIL released, and a thread costs nothing to start
    with ThreadPoolExecutor(usable_cores()) as pool:
        return {"error": list(pool.map(_error, batch[image_column]))}


def drop_unreadable(dataset: Dataset, image_column: str, split: str) -> tuple[Dataset, list[dict]]:
    """Decode every image once, on every usable core, and drop those that cannot be, or whose aspect ratio is
    beyond images.MAX_ASPECT_RATIO (`images.check_image`: a JPEG decoded at 1/8, which fails on a truncated or
    corrupt file as a whole decode does), so that a bad file is named up front instead of crashing a run an hour
    in. Cached by datasets' fingerprint: only the first run over a dataset pays."""
    raw = dataset.cast_column(image_column, ImageFeature(decode=False))
    checked = raw.map(_check_images, fn_kwargs={"image_column": image_column}, batched=True,
                      remove_columns=raw.column_names, desc=f"checking {split} images")
    errors = checked["error"]
    bad = [i for i, error in enumerate(errors) if error]
    if not bad:
        return dataset, []
    skipped = [{"split": split, "file": raw[i][image_column]["path"], "error": errors[i]} for i in bad]
    return dataset.select([i for i, error in enumerate(errors) if not error]), skipped


def load_dataset_dict(cfg: TrainConfig) -> DatasetDict:
    """Every split of cfg.dataset (a Hub id, a local folder or 'demo'); images are decoded on access."""
    if cfg.dataset == "demo":
        return load_folder(make_demo(default_demo_dir()))
    if Path(cfg.dataset).expanduser().is_dir():
        return load_folder(Path(cfg.dataset).expanduser())
    if not is_repo_id(cfg.dataset) or "@" in cfg.dataset:
        raise DatasetError(f"--dataset {cfg.dataset}: no such folder (in {Path.cwd()}), and not a Hub dataset "
                           f"id (org/name)")
    hint = "pass a local image folder or --dataset demo"
    with hub_errors(f"dataset {cfg.dataset!r}", hint=hint):
        try:
            return load_dataset(cfg.dataset)
        except DatasetNotFoundError:
            raise DatasetError(f"--dataset {cfg.dataset}: no such folder (in {Path.cwd()}), and no such dataset "
                               f"on the Hub ({constants.ENDPOINT}); check the spelling (Food-101 is ethz/food101), "
                               f"or {hint}") from None


def load_splits(cfg: TrainConfig) -> Splits:
    """Train and eval datasets with `image`/`label` columns named as in cfg, and the label names."""
    ds = load_dataset_dict(cfg)
    if "train" not in ds:
        raise DatasetError(f"{cfg.dataset}: no 'train' split (found {', '.join(ds)})")
    label_feature = ds["train"].features.get(cfg.label_column)
    if label_feature is None and cfg.image_column in ds["train"].features:
        # imagefolder adds no label column when everything sits in one class folder
        raise DatasetError(f"{cfg.dataset}: found images but not at least 2 class folders; lay it out as "
                           f"train/<class>/*.jpg (and validation/<class>/*.jpg)")
    if not isinstance(label_feature, ClassLabel):
        raise DatasetError(f"{cfg.dataset}: column {cfg.label_column!r} is not a ClassLabel "
                           f"(columns: {', '.join(ds['train'].column_names)})")
    if len(label_feature.names) < 2:
        raise DatasetError(f"{cfg.dataset}: found {len(label_feature.names)} class(es) "
                           f"({', '.join(label_feature.names) or 'none'}); a classifier needs at least 2")
    eval_split = next((name for name in EVAL_SPLITS if name in ds), None)
    train = ds["train"]
    if eval_split is None:
        try:
            held_out = train.train_test_split(test_size=cfg.val_fraction, stratify_by_column=cfg.label_column,
                                              seed=cfg.seed)
        except ValueError as e:  # fewer held-out images than classes
            raise DatasetError(f"{cfg.dataset} has no validation/ or test/ folder and too few images for a "
                               f"stratified {cfg.val_fraction:.0%} hold-out ({e}); add a validation/ folder or "
                               f"raise --val-fraction") from None
        train, evaluation = held_out["train"], held_out["test"]
        eval_split = f"stratified {cfg.val_fraction:.0%} hold-out of train (seed {cfg.seed})"
        logger.info("%s has no validation or test split: evaluating on a %s", cfg.dataset, eval_split)
    else:
        evaluation = ds[eval_split]
        if eval_split == "validation" and "test" in ds:
            logger.info("evaluating on the validation split; the test split (%d images) is left untouched: score "
                        "it once, at the end, with python -m food101hf.report --split test", len(ds["test"]))
        elif eval_split == "test":
            logger.info("no validation split: evaluating on the test split, so its top-1 is a test score only if "
                        "no setting is chosen by it")
    # quick runs take a seeded random subset: Food-101's splits are sorted by class
    available = len(train)
    if cfg.max_train_samples:
        train = train.shuffle(seed=cfg.seed).select(range(min(cfg.max_train_samples, len(train))))
    if cfg.max_eval_samples:
        evaluation = evaluation.shuffle(seed=cfg.seed).select(range(min(cfg.max_eval_samples, len(evaluation))))

    train, skipped = drop_unreadable(train, cfg.image_column, "train")
    evaluation, skipped_eval = drop_unreadable(evaluation, cfg.image_column, "eval")
    skipped += skipped_eval
    for item in skipped:
        logger.warning("skipping %s (%s): %s", item["file"], item["split"], item["error"])
    missing = sorted(set(range(len(label_feature.names))) - set(train[cfg.label_column]))
    names = ", ".join(label_feature.names[i] for i in missing)
    if missing and not cfg.max_train_samples:
        raise DatasetError(f"{cfg.dataset}: no readable training images for class(es) {names}")
    if missing:
        logger.warning("the --max-train-samples subset (a seeded random %d of %d training images) has no readable "
                       "image of %d of the %d classes (%s): the model cannot learn them in this run; raise "
                       "--max-train-samples for every class to appear", len(train), available, len(missing),
                       len(label_feature.names), names)
    if len(evaluation) == 0:
        raise DatasetError(f"{cfg.dataset}: the {eval_split} split has no readable images")
    return Splits(train, evaluation, list(label_feature.names), eval_split, skipped)


def check_classes(dataset: str, found: list[str], model: str, expected: list[str], advice: str) -> None:
    """Raise DatasetError, ending with `advice`, unless the dataset's class names are the model's, in the same
    order: the model's head would otherwise mean other classes."""
    def preview(names: list[str]) -> str:
        return f"{len(names)}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"

    if found != expected:
        raise DatasetError(f"{dataset} has other classes ({preview(found)}) than {model} was trained on "
                           f"({preview(expected)}), in that order: {advice}")


def eval_dataset(cfg: TrainConfig, split: str | None) -> tuple[Dataset, list[str], str]:
    """(dataset, label names, where it comes from) for a report: `split` of cfg.dataset, by default validation or
    test, else the seeded stratified hold-out of train that train.py evaluated on. The same --max-eval-samples
    subset as train.py's; unreadable images are dropped and named."""
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
    dataset, skipped = drop_unreadable(dataset, cfg.image_column, split)
    for item in skipped:
        logger.warning("skipping %s (%s): %s", item["file"], split, item["error"])
    return dataset, list(feature.names), split
