"""The recipe as one typed dataclass, and how a run's settings are resolved.

Precedence, lowest first: the dataclass defaults, a YAML preset (``--config FILE.yaml``), then command-line
flags. Every field is a flag (``image_size`` -> ``--image-size``; booleans get ``--x/--no-x``). Unknown YAML
keys and unknown flags fail with the list of valid ones.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import subprocess
import sys
import types
import typing
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import yaml


class ConfigError(ValueError):
    """A preset or flag that does not fit the config dataclass."""


def _help(text: str, default):
    return field(default=default, metadata={"help": text})


@dataclass
class TrainConfig:
    # data
    dataset: str = _help("'ethz/food101' (Hub id), a local folder (train/<class>/*, validation|test/<class>/*), "
                         "or 'demo'", "ethz/food101")
    image_column: str = _help("image column of a Hub dataset", "image")
    label_column: str = _help("label column (a ClassLabel) of a Hub dataset", "label")
    val_fraction: float = _help("stratified hold-out used when a local folder has no validation split", 0.1)
    max_train_samples: int | None = _help("use only the first N training images (quick runs)", None)
    max_eval_samples: int | None = _help("use only the first N validation images (quick runs)", None)
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
    auto_augment: str | None = _help("timm auto-augment policy, e.g. 'rand-m9-mstd0.5'", None)
    # run
    seed: int = _help("seed for weights init, data order, augmentation and Mixup", 42)
    mixed_precision: str = _help("'auto' (the Accelerate config's choice, else bf16 where the hardware has it), "
                                 "'no', 'fp16' or 'bf16'", "auto")
    output_dir: str = _help("where the model, metrics, model card and config are written", "outputs/food101")
    report_to: str | None = _help("experiment tracker for Accelerate, e.g. 'tensorboard'", None)
    report: bool = _help("after training, write the error analysis (food101hf.report) into OUTPUT_DIR/report/",
                         True)
    checkpoint_every: int | None = _help("also checkpoint every N optimizer updates (always at each epoch's end)",
                                         None)
    keep_checkpoints: int = _help("how many of the newest checkpoints to keep", 2)
    resume: str | None = _help("'auto' (newest checkpoint in OUTPUT_DIR/checkpoints, if any) or a checkpoint path",
                               None)
    push_to_hub: str | None = _help("after training, push the output folder to this Hub repo (org/name)", None)
    hub_private: bool = _help("create the Hub repo as private", False)
    hub_revision: str | None = _help("Hub branch to push to (created if missing)", None)
    hub_commit_message: str | None = _help("commit message of the push", None)

    def freeze_modules(self) -> list[str]:
        if self.freeze.strip().lower() in ("", "none"):
            return []
        return [name.strip() for name in self.freeze.split(",") if name.strip()]


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
    init: str | None = _help("train.py/polish.py output folder, or Hub repo id org/name[@revision], to start from",
                             None)
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


def _field_types(cls) -> dict[str, type]:
    """Each field's type, with `X | None` unwrapped to X."""
    types_ = {}
    for name, hint in typing.get_type_hints(cls).items():
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        types_[name] = args[0] if typing.get_origin(hint) in (typing.Union, types.UnionType) else hint
    return types_


def _is_optional(cls, name: str) -> bool:
    return type(None) in typing.get_args(typing.get_type_hints(cls)[name])


def _coerce(cls, name: str, value):
    """Convert a YAML value or a flag's string to the field's type, or fail naming the field."""
    kind = _field_types(cls)[name]
    spelled_none = isinstance(value, str) and value.lower() in ("none", "null")
    if value is None or (spelled_none and _is_optional(cls, name)):
        if _is_optional(cls, name):
            return None
        raise ConfigError(f"{name} cannot be empty")
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    try:
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
        return kind(value)
    except ValueError:
        raise ConfigError(f"{name} must be {kind.__name__}, got {value!r}") from None


def build_parser(cls, description: str | None = None) -> argparse.ArgumentParser:
    """One flag per dataclass field. Defaults are suppressed so that only flags actually given override."""
    parser = argparse.ArgumentParser(description=description, allow_abbrev=False,
                                     argument_default=argparse.SUPPRESS,
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--config", metavar="FILE.yaml", help="YAML preset; flags given here override it")
    field_types = _field_types(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        help_ = f"{f.metadata.get('help', '')} (default: {f.default})"
        if field_types[f.name] is bool:
            parser.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction, help=help_)
        else:
            parser.add_argument(flag, dest=f.name, metavar=field_types[f.name].__name__.upper(), help=help_)
    return parser


def load_yaml(cls, path: str | Path) -> dict:
    """Read a preset and check its keys (dashes or underscores) against the dataclass."""
    with open(path, encoding="utf-8") as f:
        raw = yaml.safe_load(f) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a preset must be a mapping of config keys to values")
    values = {str(k).replace("-", "_"): v for k, v in raw.items()}
    valid = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"{path}: unknown config key(s) {', '.join(unknown)}. Valid keys: {', '.join(valid)}")
    return values


def parse_config(cls=TrainConfig, argv: list[str] | None = None, description: str | None = None):
    """Defaults < YAML preset < flags. Exits with a usage message (status 2) on any bad key, flag or value."""
    parser = build_parser(cls, description)
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        valid = ", ".join(a.option_strings[0] for a in parser._actions if a.option_strings)
        parser.error(f"unrecognized arguments: {' '.join(unknown)}\nvalid flags: {valid}")
    given = vars(args)
    try:
        values = load_yaml(cls, given.pop("config")) if "config" in given else {}
        values.update(given)
        return cls(**{name: _coerce(cls, name, value) for name, value in values.items()})
    except (ConfigError, OSError, yaml.YAMLError) as e:
        parser.error(str(e))


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
