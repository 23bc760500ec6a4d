"""What a Hub dataset's layout means to a run: its config, which split trains and which evaluate, which columns hold
the image and the label, and the class names. train.py, polish.py, ``food101hf.report`` (and its ``--audit``) and
the Space's examples read a Hub dataset through `load_hub_dataset`, so they all read it the same way.

    dataset_dict, layout = load_hub_dataset("acme/dishes", config=None, image_column=None, label_column=None)
    layout.splits          # {"train": "train", "validation": "valid", "test": "test"}: role -> the dataset's name
    dataset_dict["validation"]   # the `valid` split with `image` and `label` columns, `label` a ClassLabel

The rules (docs/data.md states them for users):
- Config: ``--dataset-config NAME``; without it, the dataset's default or only config. Several configs and no
  default is an error that names them.
- Splits: named as local split folders are (`folders.SPLIT_FOLDERS`, any case): train/training,
  validation/val/valid/dev, test/testing. Two splits naming one role is an error naming both; other splits
  (`unlabeled`, `extra`) are not used. The log says which split became which role.
- Image column: the one `Image` column, else ``--image-column``.
- Label column: the one `ClassLabel` column; else, among the ClassLabel, string and integer columns, the one
  named label/labels/target/fine_label/class (any case); else ``--label-column``. The log says which columns were
  taken and how to choose others.
- Label types: a ClassLabel keeps its names; strings become a ClassLabel of the sorted names found in any split
  (the same classes in every split; a name no training image has is refused by `data.load_splits`); integers are
  class indices 0..max, named by their number.
- Withheld labels (-1 or null on every row, as in a benchmark's hidden test split): the split cannot be scored and
  is never evaluated on (`labels_withheld`). A split that is used with some labels missing or out of range is
  refused before any training, naming the split and the values (`check_labels`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from datasets import ClassLabel, Dataset, DatasetDict, Value, get_dataset_config_names, load_dataset
from datasets import Image as ImageFeature
from datasets import config as datasets_config
from datasets import load_dataset_builder

from .errors import DatasetError
from .folders import split_names, split_role
from .images import open_image, read_encoded

LABEL_COLUMN_NAMES = ("label", "labels", "target", "fine_label", "class")  # as transformers/AutoTrain users name it
WITHHELD = -1  # datasets' ClassLabel value for "no label"
logger = logging.getLogger(__name__)


@dataclass
class Layout:
    """How a run reads a dataset: `splits` maps each role (train, validation, test) to the dataset's split name;
    `choices` says how the columns were chosen, for the log."""

    dataset: str
    config: str | None
    splits: dict[str, str]
    image_column: str
    label_column: str
    label_names: list[str]
    unused_splits: list[str] = field(default_factory=list)
    choices: list[str] = field(default_factory=list)

    def recorded(self) -> dict:
        """The fields of the recipe (train_config.yaml) this layout fills, for later commands to reuse."""
        return {"dataset_config": self.config, "image_column": self.image_column, "label_column": self.label_column}

    def describe_splits(self) -> str:
        """'train = train, validation = valid, test = test'; the splits not used follow."""
        used = ", ".join(f"{role} = {name}" for role, name in self.splits.items())
        return used + (f"; not used: {', '.join(self.unused_splits)}" if self.unused_splits else "")

    def log(self, to: logging.Logger) -> None:
        config = f" (config {self.config})" if self.config else ""
        to.info("%s%s: splits %s", self.dataset, config, self.describe_splits())
        for choice in self.choices:
            to.info("%s: %s", self.dataset, choice)


def _kind(feature) -> str:
    """A column's type as the messages name it: Image, ClassLabel, or the value's dtype (string, int64, ...)."""
    if isinstance(feature, (ImageFeature, ClassLabel)):
        return type(feature).__name__
    return feature.dtype if isinstance(feature, Value) else type(feature).__name__


def _label_kind(feature) -> str | None:
    """'ClassLabel', 'string' or 'integer' for a column that can hold class labels, else None."""
    if isinstance(feature, ClassLabel):
        return "ClassLabel"
    if isinstance(feature, Value) and feature.dtype in ("string", "large_string"):
        return "string"
    if isinstance(feature, Value) and feature.dtype.startswith(("int", "uint")):
        return "integer"
    return None


def _columns(features) -> str:
    return ", ".join(f"{name} ({_kind(feature)})" for name, feature in features.items())


def split_roles(names: list[str], dataset: str) -> tuple[dict[str, str], list[str]]:
    """({role: split name}, the names that are no role) by the folder rules; DatasetError without a train split or
    with two splits for one role."""
    roles: dict[str, str] = {}
    unused = []
    for name in names:
        role = split_role(name)
        if role in roles:
            raise DatasetError(f"{dataset}: splits {roles[role]!r} and {name!r} are both the {role} split by "
                               f"food101hf's split names ({split_names()}, any case); it cannot tell which to use")
        if role:
            roles[role] = name
        else:
            unused.append(name)
    if "train" not in roles:
        raise DatasetError(f"{dataset}: no train split (found {', '.join(names)}); food101hf trains on the split "
                           f"named train or training")
    return dict(sorted(roles.items(), key=lambda item: ("train", "validation", "test").index(item[0]))), unused


def _image_column(features, dataset: str, given: str | None) -> tuple[str, str]:
    """(the image column, how it was chosen)."""
    images = [name for name, feature in features.items() if isinstance(feature, ImageFeature)]
    if given:
        if not isinstance(features.get(given), ImageFeature):
            what = "no such column" if given not in features else f"a {_kind(features[given])} column, not images"
            raise DatasetError(f"{dataset}: --image-column {given}: {what} (columns: {_columns(features)})")
        return given, "as set"
    if len(images) != 1:
        found = f"{len(images)} Image columns" if images else "no Image column"
        raise DatasetError(f"{dataset}: {found} (columns: {_columns(features)}); pass --image-column NAME")
    return images[0], "the only Image column"


def _label_column(features, dataset: str, given: str | None) -> tuple[str, str]:
    """(the label column, how it was chosen and how to choose another)."""
    if given:
        if given not in features or _label_kind(features[given]) is None:
            what = "no such column" if given not in features else (f"a {_kind(features[given])} column, not class "
                                                                   f"labels (a ClassLabel, strings or integers)")
            raise DatasetError(f"{dataset}: --label-column {given}: {what} (columns: {_columns(features)})")
        return given, "as set"
    class_labels = [name for name, feature in features.items() if isinstance(feature, ClassLabel)]
    candidates = class_labels or [name for name, feature in features.items() if _label_kind(feature)]
    named = [name for name in candidates if name.casefold() in LABEL_COLUMN_NAMES]
    if len(class_labels) == 1:
        chosen, why = class_labels[0], "the only ClassLabel column"
    elif len(named) == 1:
        chosen, why = named[0], ("the ClassLabel column named like a label" if class_labels
                                 else f"no ClassLabel column; the {_label_kind(features[named[0]])} column named "
                                      f"like a label")
    else:
        if class_labels:
            found = f"{len(class_labels)} ClassLabel columns ({', '.join(class_labels)})"
        elif named:
            found = f"{len(named)} columns named like a label ({', '.join(named)})"
        else:
            found = f"no ClassLabel column and none named {'/'.join(LABEL_COLUMN_NAMES)}"
        raise DatasetError(f"{dataset}: {found} (columns: {_columns(features)}); pass --label-column NAME")
    others = [name for name in dict.fromkeys(class_labels + named) if name != chosen]
    return chosen, why + (f"; also a candidate: {', '.join(others)}" if others else "")


def _label_names(dataset_dict: DatasetDict, column: str) -> list[str]:
    """The class names: a ClassLabel's own; the sorted strings found in any split; integers 0..max by number."""
    feature = next(iter(dataset_dict.values())).features[column]
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    values = {value for split in dataset_dict.values() for value in split.unique(column) if value is not None}
    if _label_kind(feature) == "string":
        return sorted(values)
    return [str(i) for i in range(max((v for v in values if v >= 0), default=-1) + 1)]


def resolve(dataset_dict: DatasetDict, dataset: str, config: str | None, image_column: str | None = None,
            label_column: str | None = None) -> Layout:
    """The layout of a loaded dataset (its splits as the dataset names them) by the rules in this module's
    docstring; `image_column`/`label_column` are the user's flags (None: detect). Raises DatasetError."""
    splits, unused = split_roles(list(dataset_dict), dataset)
    features = dataset_dict[splits["train"]].features
    image, image_why = _image_column(features, dataset, image_column)
    label, label_why = _label_column(features, dataset, label_column)
    names = _label_names(DatasetDict({name: dataset_dict[name] for name in splits.values()}), label)
    choices = [f"image column {image!r} ({image_why}), label column {label!r} ({label_why})"
               + ("" if image_column and label_column else "; --image-column/--label-column NAME choose others")]
    kind = _label_kind(features[label])
    if kind != "ClassLabel":
        order = "sorted" if kind == "string" else "by number"
        choices.append(f"its {kind} labels are {len(names)} classes, {order}: {', '.join(names[:5])}"
                       f"{', ...' if len(names) > 5 else ''}")
    return Layout(dataset, config, splits, image, label, names, unused, choices)


def standardize(dataset_dict: DatasetDict, layout: Layout) -> DatasetDict:
    """The layout's splits keyed by role, each with only an `image` and a `label` column (a ClassLabel of
    layout.label_names), as a local folder's are (`folders.load_folder`). Renames and casts only."""
    splits = {}
    for role, name in layout.splits.items():
        split = dataset_dict[name].select_columns([layout.image_column, layout.label_column])
        renames = {old: new for old, new in ((layout.image_column, "image"), (layout.label_column, "label"))
                   if old != new}
        split = split.rename_columns(renames) if renames else split
        if not isinstance(split.features["label"], ClassLabel):
            split = split.cast_column("label", ClassLabel(names=layout.label_names))
        splits[role] = split
    return DatasetDict(splits)


def labels_withheld(dataset: Dataset) -> bool:
    """Whether every label of a standardized split is withheld (-1 or null), as in a benchmark's hidden test set:
    it cannot be scored. Reads the label column only."""
    return len(dataset) > 0 and set(dataset.unique("label")) <= {WITHHELD, None}


def check_labels(dataset: Dataset, where: str) -> None:
    """Refuse a standardized split that is to be trained or evaluated on while some of its labels are missing or out
    of range, naming `where` (the dataset and split) and the values. Reads the label column only."""
    count = len(dataset.features["label"].names)
    bad = [value for value in dataset.unique("label") if value is None or not 0 <= value < count]
    if not bad:
        return
    rows = Counter(value for value in dataset["label"] if value in bad)
    what = {None: "null", WITHHELD: "-1, withheld"}
    values = ", ".join(f"{what.get(value, value)} ({rows[value]} row{'s' * (rows[value] != 1)})"
                       for value in sorted(bad, key=lambda v: (v is not None, v or 0)))
    raise DatasetError(f"{where}: {sum(rows.values())} of {len(dataset)} labels are missing or out of range for its "
                       f"{count} classes (0..{count - 1}): {values}; every image trained or evaluated on needs its "
                       f"class")


def _load(dataset: str, config: str | None) -> DatasetDict:
    try:
        return load_dataset(dataset, config)
    except ValueError:  # datasets' "Config name is missing" / "BuilderConfig ... not found": say it in one line
        configs = get_dataset_config_names(dataset)
        if config is None and len(configs) > 1:
            raise DatasetError(f"{dataset} has {len(configs)} configs and no default: pass --dataset-config NAME, "
                               f"one of {', '.join(configs)}") from None
        if config is not None and config not in configs:
            raise DatasetError(f"{dataset}: no config {config!r} (configs: {', '.join(configs)}); pass one of them "
                               f"as --dataset-config") from None
        raise


def load_hub_dataset(dataset: str, config: str | None, image_column: str | None,
                     label_column: str | None) -> tuple[DatasetDict, Layout]:
    """A Hub dataset through `datasets.load_dataset`, standardized (`standardize`), and its layout, logged. Raises
    DatasetError for a config, split or column it cannot resolve; the caller turns the Hub's errors into
    one line (`hub_access.hub_errors`)."""
    found = _load(dataset, config)
    layout = resolve(found, dataset, next(iter(found.values())).info.config_name, image_column, label_column)
    layout.log(logger)
    return standardize(found, layout), layout


def is_cached(dataset: str, config: str | None) -> bool:
    """Whether this machine's datasets cache already holds the dataset (the check `load_dataset` makes before it
    downloads), so that reading it costs no download. False when the Hub cannot be asked and nothing is cached."""
    try:
        builder = load_dataset_builder(dataset, config)
    except ConnectionError:  # offline or unreachable, with nothing of the dataset in the cache
        return False
    return os.path.exists(os.path.join(builder.cache_dir, datasets_config.DATASET_INFO_FILENAME))


def first_of_each_class(dataset: Dataset, limit: int) -> list[tuple[str, dict]]:
    """(class name, the image undecoded: {"bytes", "path"}) of the first image of each of the first `limit` classes
    of a standardized split, for a Space's examples."""
    first: dict[int, int] = {}
    for row, label in enumerate(dataset["label"]):
        if label is not None and 0 <= label < limit and label not in first:
            first[label] = row
    raw = dataset.cast_column("image", ImageFeature(decode=False))
    names = dataset.features["label"].names
    return [(names[label], raw[row]["image"]) for label, row in sorted(first.items())]


def cached_examples(recipe: dict, split: str | None, target: Path, limit: int) -> list[Path]:
    """For a model trained on a Hub dataset: one image per class (up to `limit` classes) of `split`, the one it was
    evaluated on, written into `target` as CLASS.EXT, the dataset read as its run read it (`recipe`, its
    train_config.yaml: config, columns), for the app's and a Space's examples. Only from this machine's datasets
    cache: none, and a log line saying why, when the dataset is not there or the model was evaluated on a hold-out
    of train."""
    dataset, config = recipe["dataset"], recipe.get("dataset_config")
    if not is_cached(dataset, config):
        logger.info("no example images: %s is not in this machine's datasets cache (a run here puts it there)",
                    dataset)
        return []
    found, layout = load_hub_dataset(dataset, config, recipe.get("image_column"), recipe.get("label_column"))
    role = {name: role for role, name in layout.splits.items()}.get(split)
    if role is None:
        logger.info("no example images: the model was evaluated on %s, not a split of %s", split, dataset)
        return []
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for name, image in first_of_each_class(found[role], limit):
        path = target / f"{name.replace('/', '_')}.{open_image(image).format.lower()}"
        path.write_bytes(read_encoded(image))
        written.append(path)
    return written
