"""The recipe as one typed dataclass, and how a run's settings are resolved.

Precedence, lowest first: the dataclass defaults, a YAML preset (``--config FILE.yaml``), then command-line
flags. Every field is a flag (``image_size`` -> ``--image-size``; booleans get ``--x/--no-x``). Unknown YAML
keys and unknown flags fail with the valid ones named; so does every setting that cannot work (`check`), before
any data or model is loaded. A local dataset folder is recorded as an absolute path, so a recorded recipe means
the same folder from any working directory and is never mistaken for a Hub dataset id.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import platform
import re
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import ClassVar

import yaml

from .cli import MIXED_PRECISION, ArgumentParser, UsageError

logger = logging.getLogger(__name__)
MAX_WARMUP_SHARE = 0.5  # a preset's warmup is capped at this share of a shorter run (see `parse_config`)


class ConfigError(UsageError):
    """A preset or flag that does not fit the config dataclass, or a setting that cannot work."""


def _help(text: str, default, required: bool = False):
    return field(default=default, metadata={"help": text, "required": required})


@dataclass
class TrainConfig:
    # data
    dataset: str = _help("'ethz/food101' (Hub id), a local folder (train/<class>/*, validation|test/<class>/*), "
                         "or 'demo'", "ethz/food101")
    image_column: str = _help("image column of a Hub dataset", "image")
    label_column: str = _help("label column (a ClassLabel) of a Hub dataset", "label")
    val_fraction: float = _help("stratified hold-out used when a local folder has no validation split", 0.1)
    max_train_samples: int | None = _help("use only N training images, a seeded random subset (quick runs); "
                                          "default: all", None)
    max_eval_samples: int | None = _help("use only N validation images, a seeded random subset (quick runs); "
                                         "default: all", None)
    num_workers: int = _help("DataLoader worker processes per training process", 2)
    decode_on_device: bool = _help("workers only read files; each batch is decoded (TorchCodec: batched nvJPEG on "
                                   "a GPU) and cropped, resized, flipped and normalised on the training device "
                                   "(food101hf/device_data.py). Opt-in: not yet measured on a GPU", False)
    # model
    model: str = _help("timm model name with its pretrained tag", "resnet18.a1_in1k")
    pretrained: bool = _help("start from the tag's ImageNet weights (downloaded from the Hub)", True)
    freeze: str = _help("comma-separated module names to freeze (params and BatchNorm statistics); 'none' trains "
                        "every layer", "conv1,bn1,layer1")
    drop_rate: float = _help("dropout before the classifier", 0.0)
    image_size: int = _help("training and evaluation resolution in pixels", 192)
    # optimisation
    epochs: int = _help("passes over the training set", 30)
    batch_size: int = _help("images per process per step", 128)
    grad_accum_steps: int = _help("steps accumulated per optimizer update", 1)
    opt: str = _help("timm optimizer name (create_optimizer_v2)", "adamw")
    lr: float = _help("peak learning rate, reached after warmup", 1e-3)
    weight_decay: float = _help("weight decay; never applied to norm and bias parameters", 0.05)
    warmup_epochs: float = _help("linear warmup length, in epochs (fractions allowed)", 2.0)
    min_lr: float = _help("learning rate at the end of the cosine", 1e-6)
    clip_grad: float | None = _help("clip the global gradient norm to this value; 'none' disables", 1.0)
    # regularisation
    mixup: float = _help("Mixup alpha (0 disables)", 0.2)
    cutmix: float = _help("CutMix alpha (0 disables); with both on, timm picks one per batch", 1.0)
    smoothing: float = _help("label smoothing", 0.1)
    color_jitter: float = _help("colour jitter strength in the training transform", 0.0)
    auto_augment: str | None = _help("timm auto-augment policy, e.g. 'rand-m9-mstd0.5'; default: none", None)
    # run
    seed: int = _help("seed for weights init, data order, augmentation and Mixup", 42)
    mixed_precision: str = _help("'auto' (the Accelerate config's choice, else bf16 where the hardware has it), "
                                 "'no', 'fp16' or 'bf16'", "auto")
    output_dir: str = _help("where the model, metrics, model card and config are written", "outputs/food101")
    report_to: str | None = _help("experiment tracker for Accelerate, e.g. 'tensorboard'; default: none", None)
    report: bool = _help("after training, write the error analysis (food101hf.report) into OUTPUT_DIR/report/",
                         True)
    checkpoint_every: int | None = _help("also checkpoint every N optimizer updates (always at each epoch's end); "
                                         "default: only there", None)
    keep_checkpoints: int = _help("how many of the newest checkpoints to keep", 2)
    resume: str | None = _help("'auto' (newest checkpoint in OUTPUT_DIR-checkpoints, if any) or a checkpoint path; "
                               "default: start afresh", None)
    push_to_hub: str | None = _help("after training, push the output folder to this Hub repo (org/name); "
                                    "default: no push", None)
    hub_private: bool = _help("create the Hub repo as private", False)
    hub_revision: str | None = _help("Hub branch to push to (created if missing); default: main", None)
    hub_commit_message: str | None = _help("commit message of the push; default: 'Upload OUTPUT_DIR with "
                                           "food101hf'", None)

    MIN_EPOCHS: ClassVar[int] = 1
    NOT_FLAGS: ClassVar[tuple[str, ...]] = ()  # fields a script takes from elsewhere: recorded, not offered as flags

    def freeze_modules(self) -> list[str]:
        if self.freeze.strip().lower() in ("", "none"):
            return []
        return [name.strip() for name in self.freeze.split(",") if name.strip()]

    def check(self) -> None:
        """Refuse, naming the flag, every setting that cannot work; called before any data or model is loaded.
        (Module names in --freeze are checked against the model: `food101hf.model.check_model`.)"""
        def flag(name: str) -> str:
            return f"--{name.replace('_', '-')} {getattr(self, name)}"

        at_least = {"epochs": self.MIN_EPOCHS, "batch_size": 1, "grad_accum_steps": 1, "num_workers": 0,
                    "keep_checkpoints": 1, "checkpoint_every": 1, "max_train_samples": 1, "max_eval_samples": 1,
                    # ResNet-18 downsamples 32x: below 32 px its last stage would see less than one pixel
                    "image_size": 32, "bn_batches": 1, "min_lr": 0, "weight_decay": 0, "warmup_epochs": 0,
                    "mixup": 0, "cutmix": 0, "smoothing": 0, "drop_rate": 0, "color_jitter": 0}
        for name, low in at_least.items():
            if getattr(self, name, None) is not None and getattr(self, name) < low:
                raise ConfigError(f"{flag(name)}: must be at least {low}")
        for name in ("lr", "clip_grad"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise ConfigError(f"{flag(name)}: must be positive{' (or none)' if name == 'clip_grad' else ''}")
        if not 0 < self.val_fraction < 1:
            raise ConfigError(f"{flag('val_fraction')}: must be between 0 and 1")
        for name in ("smoothing", "drop_rate"):
            if getattr(self, name) >= 1:
                raise ConfigError(f"{flag(name)}: must be below 1")
        if self.min_lr > self.lr:
            raise ConfigError(f"{flag('min_lr')} is above {flag('lr')}: the cosine would climb instead of decay")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ConfigError(f"{flag('mixed_precision')}: must be one of {', '.join(MIXED_PRECISION)}")
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise ConfigError(f"{flag('batch_size')}: Mixup/CutMix (--mixup {self.mixup}, --cutmix {self.cutmix}) "
                              f"mixes each batch with its mirror and needs an even batch per process; use "
                              f"{self.batch_size - 1} or {self.batch_size + 1}, or --mixup 0 --cutmix 0")
        if self.epochs and self.warmup_epochs >= self.epochs:
            raise ConfigError(f"{flag('warmup_epochs')} is not shorter than {flag('epochs')}: the learning rate "
                              f"would never reach its cosine; use a warmup below {self.epochs} epochs")
        if self.push_to_hub is not None and not _is_repo_id(self.push_to_hub):
            raise ConfigError(f"--push-to-hub {self.push_to_hub}: not a Hub repo id (org/name)")
        if not self.freeze_modules() and self.freeze.strip().lower() not in ("", "none"):
            raise ConfigError(f"--freeze {self.freeze!r}: name modules, comma-separated, or 'none'")


@dataclass
class PolishConfig(TrainConfig):
    """polish.py: TrainConfig's recipe, with defaults for a short 224 px polish of a model trained at 192 px.

    Why these defaults (FixRes, Touvron et al. 2019): RandomResizedCrop makes objects look larger in training than a
    center crop does at test time, so a 192 px model is best served at a higher resolution; 224 px is 1.17x, inside
    the usual 1.15-1.3x, and the size the ImageNet weights were trained at. Re-estimating BatchNorm at the new size
    undoes part of the shift in activation statistics; a brief fine-tune does the rest, at a tenth of train.py's
    peak learning rate (1e-4 vs 1e-3) so that two epochs adapt the converged weights rather than retrain them, with
    no warmup (nothing large to warm up to) and without Mixup/CutMix (regularisers that pay off over long training;
    the polish is there to fit plain images at the new size). Not yet tuned on Food-101 by this project."""
    init: str | None = _help("train.py/polish.py output folder, or Hub repo id org/name[@revision], to start from; "
                             "its model, weights and (by default) dataset are used", None, required=True)
    dataset: str | None = _help("as in train.py; default: the dataset recorded in the init's train_config.yaml",
                                None)
    image_size: int = _help("polish and evaluation resolution in pixels", 224)
    bn_reestimate: bool = _help("re-estimate BatchNorm statistics at the new resolution before fine-tuning", True)
    bn_batches: int = _help("shuffled training batches, with eval preprocessing, for the BatchNorm re-estimate",
                            50)
    epochs: int = _help("fine-tuning passes over the training set; 0 only evaluates at the new resolution", 2)
    lr: float = _help("peak learning rate", 1e-4)
    warmup_epochs: float = _help("linear warmup length, in epochs", 0.0)
    mixup: float = _help("Mixup alpha (0 disables)", 0.0)
    cutmix: float = _help("CutMix alpha (0 disables)", 0.0)
    output_dir: str = _help("where the polished model, metrics, model card and config are written",
                            "outputs/polish")

    MIN_EPOCHS: ClassVar[int] = 0
    NOT_FLAGS: ClassVar[tuple[str, ...]] = ("model", "pretrained", "drop_rate")  # the init's own

    def check(self) -> None:
        if not self.init:
            raise ConfigError("--init is required: a folder written by train.py or polish.py, or a Hub repo id "
                              "(org/name)")
        super().check()


def _field_types(cls) -> dict[str, type]:
    """Each field's type, with `X | None` unwrapped to X."""
    types_ = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        types_[name] = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    return types_


def _is_optional(cls, name: str) -> bool:
    return type(None) in typing.get_args(typing.get_type_hints(cls)[name])


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _coerce(cls, name: str, value):
    """Convert a YAML value or a flag's string to the field's type, or fail naming the field."""
    kind = _field_types(cls)[name]
    spelled_none = isinstance(value, str) and value.lower() in ("none", "null")
    if value is None or (spelled_none and _is_optional(cls, name)):
        if _is_optional(cls, name):
            return None
        raise ConfigError(f"{_flag(name)} cannot be empty")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{_flag(name)} must be true or false, got {value!r}")
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except ValueError:
        raise ConfigError(f"{_flag(name)} must be {kind.__name__}, got {value!r}") from None


def _is_repo_id(ref: str) -> bool:
    """`org/name`, optionally `@revision`: the form of a Hub repo id."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+(@.+)?", ref))


def _flag_help(f: dataclasses.Field, is_bool: bool) -> str:
    """The field's help, and its default once: as the flag that is on for a boolean; a None default is explained
    by the help text itself ("default: all")."""
    text = f.metadata.get("help", "")
    if f.metadata.get("required") or f.default is None:
        return text
    default = ("--" if f.default else "--no-") + f.name.replace("_", "-") if is_bool else f.default
    return f"{text} (default: {default})"


def build_parser(cls, description: str | None = None, prog: str | None = None) -> ArgumentParser:
    """One flag per dataclass field (but `cls.NOT_FLAGS`), required ones listed first. Defaults are suppressed so
    that only flags actually given override the preset."""
    field_types = _field_types(cls)
    fields = [f for f in dataclasses.fields(cls) if f.name not in cls.NOT_FLAGS]
    usage = " ".join(["%(prog)s"] + [f"--{f.name.replace('_', '-')} {f.name.upper()}" for f in fields
                                     if f.metadata.get("required")] + ["[--config FILE.yaml] [options]"])
    parser = ArgumentParser(prog=prog, usage=usage, description=description, argument_default=argparse.SUPPRESS)
    required, options = parser.required, parser.options
    options.add_argument("--config", metavar="FILE.yaml", help="YAML preset; flags given here override it")
    for f in sorted(fields, key=lambda f: not f.metadata.get("required")):
        group = required if f.metadata.get("required") else options
        flag, is_bool = "--" + f.name.replace("_", "-"), field_types[f.name] is bool
        if is_bool:
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               help=_flag_help(f, is_bool))
        else:
            group.add_argument(flag, dest=f.name, metavar=field_types[f.name].__name__.upper(),
                               help=_flag_help(f, is_bool))
    return parser


def load_yaml(cls, path: str | Path) -> dict:
    """Read a preset and check its keys (dashes or underscores) against the dataclass."""
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of config keys to values")
    values = {str(k).replace("-", "_"): v for k, v in raw.items()}
    valid = [f.name for f in dataclasses.fields(cls)]  # NOT_FLAGS too: a saved config records them
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"{path}: unknown config key(s) {', '.join(unknown)}. Valid keys: {', '.join(valid)}")
    return values


def _local_dataset(dataset: str | None) -> str | None:
    """A dataset that names an existing local folder, as an absolute path: the same folder from any directory,
    and never read as a Hub id (`org/name`) later. Hub ids and 'demo' stay as they are."""
    if dataset is None or dataset == "demo" or not Path(dataset).expanduser().is_dir():
        return dataset
    return str(Path(dataset).expanduser().resolve())


def recorded_dataset(dataset: str, recipe: Path) -> str:
    """The dataset a recorded recipe (`recipe`, a train_config.yaml) names, for a run that reuses it: a local
    folder is recorded as an absolute path (`parse_config`), so it is local wherever it is read from; raises
    ConfigError if that folder is not on this machine rather than looking for it on the Hub."""
    if Path(dataset).is_absolute() and not Path(dataset).is_dir():
        raise ConfigError(f"{recipe} records the local dataset folder {dataset}, which is not on this machine: "
                          f"pass --dataset")
    return _local_dataset(dataset)


def parse_config(cls=TrainConfig, argv: list[str] | None = None, description: str | None = None,
                 prog: str | None = None):
    """Defaults < YAML preset < flags, checked (`cls.check`). Raises ConfigError (one line, naming the key or
    flag) on any bad key, flag or value; `--help` prints the flags and exits.

    A warmup from the preset or the defaults that is as long as the run (``--epochs 1`` with the preset's
    ``warmup_epochs: 2``: the LR would ramp up and the cosine would never start) is capped at MAX_WARMUP_SHARE
    of the run, and logged; the same warmup given as a flag is refused."""
    parser = build_parser(cls, description, prog)
    for name in cls.NOT_FLAGS:
        flags = {_flag(name), "--no-" + name.replace("_", "-")}
        if flags & {arg.split("=")[0] for arg in (sys.argv[1:] if argv is None else argv)}:
            raise ConfigError(f"{_flag(name)}: {parser.prog} takes it from the model it starts from (--init)")
    given = vars(parser.parse_args(argv))
    try:
        values = load_yaml(cls, given.pop("config")) if "config" in given else {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"--config: {e}") from None
    values.update(given)
    cfg = cls(**{name: _coerce(cls, name, value) for name, value in values.items()})
    if "warmup_epochs" not in given and cfg.epochs and cfg.warmup_epochs >= cfg.epochs:
        capped = cfg.epochs * MAX_WARMUP_SHARE
        source = "preset" if "warmup_epochs" in values else "defaults"
        logger.warning(f"the warmup of {cfg.warmup_epochs:g} epochs (from the {source}) is not shorter than the "
                       f"{cfg.epochs}-epoch run: warming up for {capped:g} epochs ({MAX_WARMUP_SHARE:.0%} of the run) "
                       f"instead; pass --warmup-epochs to choose")
        cfg = dataclasses.replace(cfg, warmup_epochs=capped)
    cfg.check()
    return dataclasses.replace(cfg, dataset=_local_dataset(cfg.dataset))


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


def save_config(cfg, path: str | Path) -> None:
    """Write the resolved config, reloadable with --config; provenance goes in the header comments."""
    header = [f"# written by: {' '.join(Path(sys.argv[0]).name.split())} (git {_git_revision()})"]
    header += [f"# {name} {version}" for name, version in versions().items()]
    body = yaml.safe_dump(dataclasses.asdict(cfg), sort_keys=False, allow_unicode=True)
    Path(path).write_text("\n".join(header) + "\n" + body, encoding="utf-8")
