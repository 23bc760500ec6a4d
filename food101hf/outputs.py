"""What an output folder of train.py or polish.py holds and records, for every command that reads one.

    OUT/model.safetensors, config.json   the model in timm's Hub format (`publish.export_model` writes them)
    OUT/train_config.yaml                the resolved recipe with its provenance (`save_config`, at the start)
    OUT/base_config.yaml                 after a polish: the init's recipe
    OUT/metrics.json, README.md, report/ results, model card, error analysis

A model reference is such a folder or a Hub repo id (`org/name[@revision]`) whose files are fetched through
huggingface_hub's cache (`trained_folder`); nothing downloaded is ever unpickled.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import yaml

from .config import TrainConfig
from .demo import default_demo_dir
from .errors import ConfigError, ModelNotFoundError
from .folders import image_files, is_hidden
from .hub_access import hub_errors, is_repo_id, missing_folder

WEIGHTS = "model.safetensors"
# what loading and describing a model needs (the app shows metrics.json); nothing pickled
FETCHED_FILES = [WEIGHTS, "config.json", "train_config.yaml", "metrics.json"]
EXAMPLES_PER_PAGE = 10
logger = logging.getLogger(__name__)


# ---- the recipe and where it came from ----

def _git_revision() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent,
                             capture_output=True, text=True, timeout=5)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


LIBRARIES = ("food101hf", "torch", "torchvision", "timm", "datasets", "accelerate", "evaluate", "huggingface_hub")


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def save_config(cfg, path: str | Path, notes: list[str] = ()) -> None:
    """Write the resolved config, reloadable with --config; provenance and `notes` go in the header comments; local
    folders relative to the file's own folder (`record_folders`)."""
    header = [f"# written by: {' '.join(Path(sys.argv[0]).name.split())} (git {_git_revision()})"]
    header += [f"# {name} {version}" for name, version in versions().items()] + [f"# {note}" for note in notes]
    _write_recipe(Path(path), header, record_folders(dataclasses.asdict(cfg), Path(path).parent, Path.cwd()))


def _write_recipe(path: Path, header: list[str], recipe: dict) -> None:
    body = yaml.safe_dump(recipe, sort_keys=False, allow_unicode=True)
    path.write_text("\n".join(header) + "\n" + body, encoding="utf-8")


def copy_recipe(source: Path, target: Path, folder: Path | None = None) -> None:
    """Write the recorded recipe `source` (header comments kept) as `target`, its local folders recorded relative
    to `folder` (by default `target`'s): polish.py's base_config.yaml, and the recipes a push publishes."""
    text = source.read_text(encoding="utf-8")
    header = list(itertools.takewhile(lambda line: line.startswith("#"), text.splitlines()))
    _write_recipe(target, header, record_folders(yaml.safe_load(text), folder or target.parent, source.parent))


def read_recipes(folder: Path) -> tuple[dict, dict | None]:
    """(train_config.yaml, base_config.yaml or None) of an output folder, local folders as a recipe written now
    records them (a folder written by an earlier food101hf holds absolute paths)."""
    recipe = record_folders(yaml.safe_load((folder / "train_config.yaml").read_text()), folder, folder)
    base_file = folder / "base_config.yaml"
    base = record_folders(yaml.safe_load(base_file.read_text()), folder, folder) if base_file.is_file() else None
    return recipe, base


# ---- local folders a recipe names ----

LOCAL_FIELDS = ("dataset", "init")  # the recipe fields that can name a folder of the training machine


def local_folder(value, recipe_folder: Path) -> Path | None:
    """The folder on this machine that a LOCAL_FIELDS value of a recipe in `recipe_folder` names, or None: a Hub
    id, 'demo', a folder recorded by name only, or one that is not here."""
    path = None
    if isinstance(value, dict) and "path" in value:
        path = recipe_folder / value["path"]
    elif isinstance(value, str) and dataset_kind(value) == "local":
        path = recipe_folder / Path(value).expanduser()  # an absolute path (recipes before relative ones) stays
    return path.resolve() if path is not None and path.is_dir() else None


def record_folders(recipe: dict, folder: Path, source: Path) -> dict:
    """`recipe`, whose LOCAL_FIELDS were written relative to `source`, as a recipe in `folder` records them: a local
    folder as {"path": P}, P relative to `folder` ("../data/my_food"), or as {"name": N} when it is not on this
    machine or shares no folder with `folder` below the filesystem's root. So a recipe, which is published with
    the model, names no path of the training machine, and still finds the folder while the two keep their places
    relative to each other (moved together, or the output folder moved within its parent folder)."""
    recorded = dict(recipe)
    for key in LOCAL_FIELDS:
        value = recipe.get(key)
        if not isinstance(value, (str, dict)) or dataset_kind(value) != "local" or (isinstance(value, dict) and
                                                                                   source == folder):
            continue
        path, here = local_folder(value, source), folder.resolve()
        if path is None or Path(os.path.commonpath([path, here])) == Path(here.anchor):
            recorded[key] = {"name": path.name if path else dataset_name(value)}
        else:
            recorded[key] = {"path": Path(os.path.relpath(path, here)).as_posix()}
    return recorded


def recorded_dataset(dataset, recipe: Path) -> str:
    """The dataset a recorded recipe (`recipe`, a train_config.yaml) names, for a run that reuses it: a Hub id or
    'demo' as is, a local folder as an absolute path; raises ConfigError if that folder is not on this machine
    rather than looking for it on the Hub."""
    if dataset_kind(dataset) != "local":
        return dataset
    path = local_folder(dataset, recipe.parent)
    if path is None:
        where = (f"{dataset['path']} (from its folder)" if isinstance(dataset, dict) and "path" in dataset else
                 f"`{dataset_name(dataset)}`")
        raise ConfigError(f"{recipe} records the local dataset folder {where}, which is not on this machine: "
                          f"pass --dataset")
    return str(path)


# how a run read its dataset (hub_dataset.py) and what it held out to evaluate on (data.load_splits)
LAYOUT_FIELDS = ("dataset_config", "image_column", "label_column", "val_fraction")


def reuse_layout(cfg, recipe: dict, folder: Path):
    """`cfg` with the dataset config, columns and hold-out fraction a recorded recipe (train_config.yaml, in
    `folder`) read its dataset with, where `cfg` names the same dataset and leaves them unset (None): a later
    command (polish.py, the report) reads the dataset as the run did, and evaluates on what it held out. A flag
    given wins; a val_fraction still unset becomes TrainConfig's default."""
    recorded = recipe.get("dataset")
    same = (recorded == cfg.dataset if dataset_kind(recorded) != "local" or dataset_kind(cfg.dataset) != "local" else
            local_folder(recorded, folder) == Path(cfg.dataset).expanduser().resolve())
    reused = {key: recipe[key] for key in LAYOUT_FIELDS
              if same and getattr(cfg, key) is None and recipe.get(key) is not None}
    if reused:
        logger.info("reading %s as its recorded run did: %s", cfg.dataset,
                    ", ".join(f"{key} {value}" for key, value in reused.items()))
    cfg = dataclasses.replace(cfg, **reused)
    if cfg.val_fraction is None:
        cfg = dataclasses.replace(cfg, val_fraction=TrainConfig.val_fraction)
    return cfg


def dataset_kind(dataset) -> str:
    """'demo', 'hub' (a Hub dataset id) or 'local' (a folder: a path string, or however a run records one)."""
    if dataset == "demo":
        return "demo"
    return "hub" if isinstance(dataset, str) and is_repo_id(dataset) else "local"


def dataset_name(dataset) -> str:
    """A Hub id as is; a local folder by its name only (never the path on the training machine)."""
    kind = dataset_kind(dataset)
    if kind != "local":
        return dataset
    path = (dataset.get("path") or dataset.get("name", "")) if isinstance(dataset, dict) else str(dataset)
    return Path(path).name or "a local image folder"


# ---- the model and its results ----

def served_size(folder: Path) -> int:
    """The resolution, in px, a model folder is evaluated and served at: config.json's pretrained_cfg input size
    (train.py's --image-size, or the last polish's)."""
    return json.loads((folder / "config.json").read_text())["pretrained_cfg"]["input_size"][-1]


def comparable_result(folder: Path, eval_split: str, num_eval_samples: int) -> dict | None:
    """A model folder's own reported result (metrics.json: top-1, its interval, the size it was scored at), when it
    was scored on `eval_split` with `num_eval_samples` images, so that another model's top-1 there compares with
    it; None otherwise (no metrics.json, or other images)."""
    path = folder / "metrics.json"
    reported = json.loads(path.read_text()) if path.is_file() else {}
    if (reported.get("eval_split"), reported.get("num_eval_samples")) != (eval_split, num_eval_samples):
        return None
    return {key: reported[key] for key in ("top1", "top1_ci95", "image_size", "eval_split", "num_eval_samples")
            if key in reported}


def polish_verdict(metrics: dict, init: str) -> str | None:
    """For a polished model's metrics.json that ended below its init (`worse_than_init`, recorded by polish.py):
    the warning the log, the exit summary and the model card give. None otherwise."""
    if not metrics.get("worse_than_init"):
        return None
    before = metrics["init"]
    return (f"this polish made the model worse: top-1 {metrics['top1']:.4f} at {metrics['image_size']} px, against "
            f"{before['top1']:.4f} for {init} at {before['image_size']} px on the same {before['num_eval_samples']} "
            f"{before['eval_split']} images. Serve {init} instead, or polish at another --image-size")


def trained_folder(ref: str | Path) -> Path:
    """The folder of a model written by train.py or polish.py: `ref` itself if it is a local folder, else a Hub repo
    id (``org/name`` or ``org/name@revision``) fetched through huggingface_hub's cache. Only FETCHED_FILES are
    fetched, so nothing downloaded is ever unpickled; cached repos load offline with HF_HUB_OFFLINE=1. Raises
    ModelNotFoundError (neither a folder nor a Hub repo, or a folder without weights) or HubError."""
    folder = Path(ref).expanduser()
    if not folder.is_dir():
        if missing := missing_folder(ref):  # a mistyped folder is said to be missing, not looked for on the Hub
            raise ModelNotFoundError(missing)
        nowhere = f"{ref}: no such folder (in {Path.cwd()})"
        if not is_repo_id(ref):
            raise ModelNotFoundError(f"{nowhere}, and not a Hub repo id (org/name)")
        from huggingface_hub import constants, snapshot_download
        from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

        repo_id, _, revision = str(ref).partition("@")
        hint = "pass a local folder written by train.py or polish.py"
        with hub_errors(f"model {ref} (no such folder in {Path.cwd()}, so a Hub repo of that name)", hint=hint):
            try:
                folder = Path(snapshot_download(repo_id, revision=revision or None, allow_patterns=FETCHED_FILES))
            except (RepositoryNotFoundError, RevisionNotFoundError):
                raise ModelNotFoundError(f"{nowhere}, and no Hub repo {ref} at {constants.ENDPOINT} (or it is "
                                         f"private and HF_TOKEN cannot see it); {hint}") from None
    if not (folder / WEIGHTS).is_file():
        raise ModelNotFoundError(f"{ref}: no {WEIGHTS}; expected a folder written by train.py or polish.py")
    return folder


def example_images(folder: Path, target: Path, limit: int = EXAMPLES_PER_PAGE) -> list[str]:
    """One image per class (up to `limit` classes) of the model's validation split, when its dataset is here: the
    generated demo, or the local folder recorded in train_config.yaml (their own files); or, for a Hub dataset in
    this machine's datasets cache, its eval split's, written into `target` (`hub_dataset.cached_examples`)."""
    recipe_file = folder / "train_config.yaml"
    if not recipe_file.is_file():
        return []
    recipe = yaml.safe_load(recipe_file.read_text())
    dataset = recipe.get("dataset")
    if dataset_kind(dataset) == "hub":
        from .hub_dataset import cached_examples  # here: datasets loads only for a model of a Hub dataset

        metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
        return [str(path) for path in cached_examples(recipe, metrics.get("eval_split"), target, limit)]
    root = default_demo_dir() if dataset == "demo" else local_folder(dataset, folder)
    if root is None:
        return []
    split = next((root / s for s in ("validation", "test", "train") if (root / s).is_dir()), None)
    if split is None:
        return []
    classes = sorted(p for p in split.iterdir() if p.is_dir() and not is_hidden(p.name))[:limit]
    found = (next(iter(image_files(c)), None) for c in classes)  # training's rules: no hidden files, HEIC too
    return [str(f) for f in found if f is not None]
