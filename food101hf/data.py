"""The splits a run trains and evaluates on, from a Hub dataset id (``ethz/food101``, read by
``food101hf.hub_dataset``), a local image folder (``food101hf.folders.load_folder``) or ``demo``, each with an
`image` and a `label` column whatever the dataset calls them; images are decoded on access
(`transforms.with_transform`), and every one is checked once before training (`drop_unreadable`).

    splits = load_splits(cfg)          # Splits(train, eval, label_names, eval_split, skipped, layout)
    dataset, names, split = eval_dataset(cfg, "test")   # one split for a report, by train.py's rules
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from datasets import Dataset, DatasetDict
from datasets import Image as ImageFeature
from datasets.exceptions import DatasetNotFoundError
from huggingface_hub import constants

from .config import TrainConfig
from .demo import default_demo_dir, make_demo
from .errors import ConfigError, DatasetError
from .folders import content_fingerprint, load_folder, split_role
from .hub_access import hub_errors, is_repo_id, missing_folder
from .hub_dataset import Layout, check_labels, labels_withheld, load_hub_dataset
from .images import check_image
from .runtime import usable_cores

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("validation", "test")  # Food-101 on the Hub calls its test set "validation"
# The stratified hold-out's seed, fixed: --seed varies the training, never what is evaluated on, so seeds are
# compared on the same images and polish.py and the report hold out what train.py did (42: --seed's default)
HOLDOUT_SEED = 42


@dataclass
class Splits:
    train: Dataset
    eval: Dataset
    label_names: list[str]
    eval_split: str  # where the eval images come from (the dataset's own split name), for logs and the model card
    skipped: list[dict] = field(default_factory=list)  # unreadable files: split, file, error
    root: Path | None = None  # the local folder (or the generated demo) the splits were read from; None: the Hub
    layout: Layout | None = None  # how the dataset was read (config, split roles, columns), for the recipe

    def identity(self) -> dict:
        """What the run trains and evaluates on, for the checkpoint's run signature, per split: its size,
        `content` and `fingerprint`, each over the rows actually used (the --max-*-samples subset, without
        unreadable files). `content` leaves out where the data lies: for a local folder it hashes each image's
        path within the folder, class, size and SHA-256 (`content_fingerprint`), so the folder may move or be copied
        anew (new modification times) while an added, removed, relabelled or edited photo changes it; for a Hub
        dataset it is `datasets`' fingerprint, which hashes the dataset's revision and cache-relative folder.
        `fingerprint` is `datasets`' own, which for a local folder also hashes absolute paths and modification
        times: what checkpoints written before `content` existed recorded (`checkpoint._split_key`)."""
        return {name: {"images": len(split), "content": split._fingerprint if self.root is None else
                       content_fingerprint(split, self.root, name), "fingerprint": split._fingerprint}
                for name, split in (("train", self.train), ("eval", self.eval))}


def images_per_class(dataset: Dataset, num_classes: int) -> list[int]:
    """How many images of each class (by label index) `dataset` holds; read from the label column only."""
    counts = Counter(dataset["label"])
    return [counts[label] for label in range(num_classes)]


def describe_classes(splits: Splits, listed: int = 20) -> str:
    """The classes and their images per split, for the log: each class named up to `listed` classes
    ('3 classes, train/eval images: beignets 8/3, crème brûlée 8/3, fish and chips 8/3'), else the range and the
    smallest class."""
    names = splits.label_names
    train, evaluation = (images_per_class(split, len(names)) for split in (splits.train, splits.eval))
    if len(names) <= listed:
        return f"{len(names)} classes, train/eval images: " + ", ".join(
            f"{name} {t}/{e}" for name, t, e in zip(names, train, evaluation))
    if len(set(train)) == len(set(evaluation)) == 1:
        return f"{len(names)} classes, {train[0]} train and {evaluation[0]} eval images each"
    smallest = min(range(len(names)), key=lambda i: (train[i], evaluation[i]))
    return (f"{len(names)} classes, {min(train)}-{max(train)} train and {min(evaluation)}-{max(evaluation)} eval "
            f"images each (fewest: {names[smallest]}, {train[smallest]}/{evaluation[smallest]})")


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


def local_root(dataset: str) -> Path | None:
    """The folder of a local dataset ('demo': the generated one, made if missing); None for a Hub dataset."""
    if dataset == "demo":
        return make_demo(default_demo_dir())
    return Path(dataset).expanduser() if Path(dataset).expanduser().is_dir() else None


def load_dataset_dict(cfg: TrainConfig) -> tuple[DatasetDict, Layout]:
    """Every split of cfg.dataset (a Hub id, a local folder or 'demo') keyed by role (train, validation, test), with
    `image` (decoded on access) and `label` (a ClassLabel) columns, and how it was read."""
    if (local := local_root(cfg.dataset)) is not None:
        flags = {"--dataset-config": cfg.dataset_config, "--image-column": cfg.image_column not in (None, "image"),
                 "--label-column": cfg.label_column not in (None, "label")}
        if any(flags.values()):
            raise ConfigError(f"{', '.join(flag for flag, given in flags.items() if given)}: for a Hub dataset; "
                              f"{cfg.dataset} is a local folder, whose split folders, class folders and image files "
                              f"are its layout")
        found = load_folder(local)
        return found, Layout(cfg.dataset, None, {split: split for split in found}, "image", "label",
                             list(found["train"].features["label"].names))
    if missing := missing_folder(cfg.dataset):
        raise DatasetError(f"--dataset {missing}")
    if not is_repo_id(cfg.dataset) or "@" in cfg.dataset:
        raise DatasetError(f"--dataset {cfg.dataset}: no such folder (in {Path.cwd()}), and not a Hub dataset "
                           f"id (org/name)")
    hint = "pass a local image folder or --dataset demo"
    with hub_errors(f"dataset {cfg.dataset!r}", hint=hint):
        try:
            return load_hub_dataset(cfg.dataset, cfg.dataset_config, cfg.image_column, cfg.label_column)
        except DatasetNotFoundError:
            raise DatasetError(f"--dataset {cfg.dataset}: no such folder (in {Path.cwd()}), and no such dataset "
                               f"on the Hub ({constants.ENDPOINT}); check the spelling (Food-101 is ethz/food101), "
                               f"or {hint}") from None


def _scorable(found: DatasetDict, layout: Layout) -> list[str]:
    """The evaluation roles present (validation, then test) whose labels are not withheld; the log names those
    that are."""
    scorable = []
    for role in (role for role in EVAL_SPLITS if role in found):
        if labels_withheld(found[role]):
            logger.info("%s: the %s split's labels are withheld (every one is -1 or null, as in a benchmark's "
                        "hidden test set): it cannot be scored, so it is not evaluated on", layout.dataset,
                        layout.splits[role])
        else:
            scorable.append(role)
    return scorable


def load_splits(cfg: TrainConfig) -> Splits:
    """Train and eval datasets with `image`/`label` columns, the label names and how the dataset was read. Every
    label of both is checked here, before any training (`hub_dataset.check_labels`)."""
    ds, layout = load_dataset_dict(cfg)
    label_names = layout.label_names
    if len(label_names) < 2:
        raise DatasetError(f"{cfg.dataset}: found {len(label_names)} class(es) "
                           f"({', '.join(label_names) or 'none'}); a classifier needs at least 2")
    scorable = _scorable(ds, layout)
    for used in ["train", *scorable[:1]]:
        check_labels(ds[used], f"{cfg.dataset}/{layout.splits[used]}")
    role = scorable[0] if scorable else None
    train = ds["train"]
    if role is None:
        try:
            held_out = train.train_test_split(test_size=cfg.val_fraction, stratify_by_column="label",
                                              seed=HOLDOUT_SEED)
        except ValueError:
            problem = holdout_problem(Counter(label_names[i] for i in train["label"]), cfg.val_fraction)
            if problem is None:
                raise
            raise DatasetError(f"{cfg.dataset} has no validation or test split, so a stratified "
                               f"{cfg.val_fraction:g} of train is held out to evaluate on, but {problem}") from None
        train, evaluation = held_out["train"], held_out["test"]
        eval_split = f"stratified {cfg.val_fraction:.0%} hold-out of train"
        logger.info("%s has no validation or test split to score: evaluating on a %s", cfg.dataset, eval_split)
    else:
        evaluation, eval_split = ds[role], layout.splits[role]
        if role == "validation" and "test" in scorable:
            logger.info("evaluating on the %s split; the %s split (%d images) is left untouched: score it once, at "
                        "the end, with python -m food101hf.report --split %s", eval_split, layout.splits["test"],
                        len(ds["test"]), layout.splits["test"])
        elif role == "test":
            logger.info("no validation split: evaluating on the %s split, so its top-1 is a test score only if "
                        "no setting is chosen by it", eval_split)
    # quick runs take a seeded random subset: Food-101's splits are sorted by class
    available = len(train)
    if cfg.max_train_samples:
        train = train.shuffle(seed=cfg.seed).select(range(min(cfg.max_train_samples, len(train))))
    if cfg.max_eval_samples:
        evaluation = evaluation.shuffle(seed=cfg.seed).select(range(min(cfg.max_eval_samples, len(evaluation))))

    train, skipped = drop_unreadable(train, "image", "train")
    evaluation, skipped_eval = drop_unreadable(evaluation, "image", "eval")
    skipped += skipped_eval
    for item in skipped:
        logger.warning("skipping %s (%s): %s", item["file"], item["split"], item["error"])
    missing = sorted(set(range(len(label_names))) - set(train["label"]))
    names = ", ".join(label_names[i] for i in missing)
    if missing and not cfg.max_train_samples:
        raise DatasetError(f"{cfg.dataset}: no readable training images for class(es) {names}")
    if missing:
        logger.warning("the --max-train-samples subset (a seeded random %d of %d training images) has no readable "
                       "image of %d of the %d classes (%s): the model cannot learn them in this run; raise "
                       "--max-train-samples for every class to appear", len(train), available, len(missing),
                       len(label_names), names)
    if len(evaluation) == 0:
        raise DatasetError(f"{cfg.dataset}: the {eval_split} split has no readable images")
    return Splits(train, evaluation, label_names, eval_split, skipped, local_root(cfg.dataset), layout)


def holdout_problem(counts: Counter, fraction: float) -> str | None:
    """Why a stratified hold-out of `fraction` cannot be drawn from a train split of `counts` (class -> images),
    by the rules of datasets' `train_test_split` (`datasets.utils.stratify`: every class needs 2 images; the
    held-out ceil(fraction * n) images and the n - that left must each number at least one per class), with what
    would work; None if none of those rules is broken."""
    n, k = sum(counts.values()), len(counts)
    single = sorted(name for name, count in counts.items() if count < 2)
    folder = "or put evaluation photos in a validation/ folder (train/<class>/ beside validation/<class>/)"
    if single:
        return (f"{len(single)} class(es) have a single image, which cannot be both trained on and held out: "
                f"{', '.join(single)}. Add photos to them, {folder}")
    held_out = math.ceil(fraction * n)
    if held_out < k:
        smallest = math.ceil(k / n * 100) / 100  # a round figure, when it still leaves k images to train on
        smallest = smallest if n - math.ceil(smallest * n) >= k else k / n
        return (f"{fraction:g} of its {n} images is {held_out}, fewer than its {k} classes: pass --val-fraction "
                f"{smallest:g} or more (one image of each class), {folder}")
    if n - held_out >= k:
        return None
    largest = math.floor((n - k) / n * 100) / 100
    return (f"holding out {fraction:g} of its {n} images leaves {n - held_out} to train on, fewer than its {k} "
            f"classes: pass --val-fraction {largest:g} or less, {folder}")


def check_classes(dataset: str, found: list[str], model: str, expected: list[str], advice: str) -> None:
    """Raise DatasetError, ending with `advice`, unless the dataset's class names are the model's, in the same
    order: the model's head would otherwise mean other classes."""
    def preview(names: list[str]) -> str:
        return f"{len(names)}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"

    if found != expected:
        raise DatasetError(f"{dataset} has other classes ({preview(found)}) than {model} was trained on "
                           f"({preview(expected)}), in that order: {advice}")


def eval_dataset(cfg: TrainConfig, split: str | None) -> tuple[Dataset, list[str], str]:
    """(dataset, label names, the split's name) for a report: `split` of cfg.dataset (its name in the dataset, or
    its role by the split folder names: validation, val, test, ...), by default the one train.py evaluated on:
    validation or test, skipping one whose labels are withheld, else the seeded stratified hold-out of train. Its
    labels are checked (`hub_dataset.check_labels`); the same --max-eval-samples subset as train.py's; unreadable
    images are dropped and named."""
    found, layout = load_dataset_dict(cfg)
    if split is None:
        role = next(iter(_scorable(found, layout)), None)
        if role is None:
            splits = load_splits(cfg)
            return splits.eval, splits.label_names, splits.eval_split
    else:
        role = {name: role for role, name in layout.splits.items()}.get(split) or split_role(split)
        if role not in found:
            raise DatasetError(f"{cfg.dataset}: no split {split!r} (found {', '.join(layout.splits.values())})")
    name, dataset = layout.splits[role], found[role]
    if labels_withheld(dataset):
        raise DatasetError(f"{cfg.dataset}/{name}: its labels are withheld (every one is -1 or null), so it cannot "
                           f"be scored; pass another --split (found {', '.join(layout.splits.values())})")
    check_labels(dataset, f"{cfg.dataset}/{name}")
    if cfg.max_eval_samples:  # the same seeded subset as train.py's: Food-101's splits are sorted by class
        dataset = dataset.shuffle(seed=cfg.seed).select(range(min(cfg.max_eval_samples, len(dataset))))
    dataset, skipped = drop_unreadable(dataset, "image", name)
    for item in skipped:
        logger.warning("skipping %s (%s): %s", item["file"], name, item["error"])
    return dataset, layout.label_names, name
