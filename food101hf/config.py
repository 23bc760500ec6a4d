"""The recipe as one typed dataclass, and how a run's settings are resolved.

Precedence, lowest first: the dataclass defaults, a YAML preset (``--config FILE.yaml``), then command-line
flags (`food101hf.flags`: every field is a flag, ``image_size`` -> ``--image-size``). Unknown YAML keys and
unknown flags fail with the valid ones named; so does every setting that cannot work (`check`), before any data
or model is loaded. A local dataset folder is resolved to an absolute path, the same folder from any working
directory and never mistaken for a Hub dataset id; the recipe a run writes records it relative to the output
folder (`outputs.record_folders`), and a preset that does so (``dataset: {path: ../data/my_food}``) is read
relative to the preset's own folder (`flags.load_yaml`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from .cli import counted
from .errors import ConfigError
from .flags import option, parse
from .hub_access import has_repo_id_form, missing_folder

MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
logger = logging.getLogger(__name__)
MAX_WARMUP_SHARE = 0.5  # a preset's warmup is capped at this share of a shorter run (see `parse_config`)


@dataclass
class TrainConfig:
    # data
    dataset: str = option("'ethz/food101' (Hub id), a local folder (train/<class>/*, validation|test/<class>/*), "
                          "or 'demo'", "ethz/food101")
    dataset_config: str | None = option("config (subset) of a Hub dataset that has several; default: its default "
                                        "or only one", None)
    image_column: str | None = option("image column of a Hub dataset; default: its one Image column", None)
    label_column: str | None = option("label column of a Hub dataset (a ClassLabel, strings or integers); default: "
                                      "its one ClassLabel column, else the one named label, labels, target, "
                                      "fine_label or class", None)
    val_fraction: float = option("stratified hold-out of train, used when the dataset has no validation or test split "
                                 "to score; the same images for every --seed", 0.1)
    max_train_samples: int | None = option("use only N training images, a seeded random subset (quick runs); "
                                           "default: all", None)
    max_eval_samples: int | None = option("use only N validation images, a seeded random subset (quick runs); "
                                          "default: all", None)
    num_workers: int = option("DataLoader worker processes per training process", 2)
    decode_on_device: bool = option("workers only read files; each batch is decoded (TorchCodec: batched nvJPEG on "
                                    "a GPU) and cropped, resized, flipped and normalised on the training device "
                                    "(food101hf/device_data.py). Opt-in: not yet measured on a GPU", False)
    # model
    model: str = option("timm model name with its pretrained tag", "resnet18.a1_in1k")
    pretrained: bool = option("start from the tag's ImageNet weights (downloaded from the Hub)", True)
    freeze: str = option("comma-separated module names to freeze (params and BatchNorm statistics); 'none' trains "
                         "every layer", "conv1,bn1,layer1")
    drop_rate: float = option("dropout before the classifier", 0.0)
    image_size: int = option("training and evaluation resolution in pixels", 192)
    # optimisation
    epochs: int = option("passes over the training set", 30)
    batch_size: int = option("images per process per step", 128)
    grad_accum_steps: int = option("steps accumulated per optimizer update", 1)
    opt: str = option("timm optimizer name (create_optimizer_v2)", "adamw")
    lr: float = option("peak learning rate, reached after warmup", 1e-3)
    weight_decay: float = option("weight decay; never applied to norm and bias parameters", 0.05)
    warmup_epochs: float = option("linear warmup length, in epochs (fractions allowed)", 2.0)
    min_lr: float = option("learning rate at the end of the cosine", 1e-6)
    clip_grad: float | None = option("clip the global gradient norm to this value; 'none' disables", 1.0)
    # regularisation
    mixup: float = option("Mixup alpha (0 disables)", 0.2)
    cutmix: float = option("CutMix alpha (0 disables); with both on, timm picks one per batch", 1.0)
    smoothing: float = option("label smoothing", 0.1)
    color_jitter: float = option("colour jitter strength in the training transform", 0.0)
    auto_augment: str | None = option("timm auto-augment policy, e.g. 'rand-m9-mstd0.5'; default: none", None)
    # run
    seed: int = option("seed for weights init, data order, augmentation and Mixup", 42)
    mixed_precision: str = option("'auto' (the Accelerate config's choice, else bf16 where the hardware has it), "
                                  "'no', 'fp16' or 'bf16'", "auto")
    output_dir: str | None = option("where the model, metrics, model card and config are written; default: "
                                    "outputs/<the dataset's name> (outputs/demo, outputs/my_food, outputs/food101)",
                                    None)
    report_to: str | None = option("experiment tracker for Accelerate, e.g. 'tensorboard'; default: none", None)
    report: bool = option("after training, write the error analysis (food101hf.report) into OUTPUT_DIR/report/",
                          True)
    checkpoint_every: int | None = option("also checkpoint every N optimizer updates (always at each epoch's end); "
                                          "default: only there", None)
    keep_checkpoints: int = option("how many of the newest checkpoints to keep", 2)
    resume: str | None = option("'auto' (newest checkpoint in OUTPUT_DIR-checkpoints, if any) or a checkpoint path; "
                                "default: start afresh", None)
    push_to_hub: str | None = option("after training, push the output folder to this Hub repo (org/name); "
                                     "default: no push", None)
    hub_private: bool = option("create the Hub repo as private", False)
    hub_revision: str | None = option("Hub branch to push to (created if missing); default: main", None)
    hub_commit_message: str | None = option("commit message of the push; default: 'Upload OUTPUT_DIR with "
                                            "food101hf'", None)

    MIN_EPOCHS: ClassVar[int] = 1
    NOT_FLAGS: ClassVar[dict[str, str]] = {}  # fields a script takes from elsewhere (-> why): recorded, not flags

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
        if self.val_fraction is not None and not 0 < self.val_fraction < 1:
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
        if self.push_to_hub is not None and not has_repo_id_form(self.push_to_hub):
            raise ConfigError(f"--push-to-hub {self.push_to_hub}: not a Hub repo id (org/name)")
        # a mistyped folder is said to be missing now, not after torch loads or the Hub is asked for it
        if self.dataset not in (None, "demo") and (missing := missing_folder(self.dataset)):
            raise ConfigError(f"--dataset {missing}")
        if not self.freeze_modules() and self.freeze.strip().lower() not in ("", "none"):
            raise ConfigError(f"--freeze {self.freeze!r}: name modules, comma-separated, or 'none'")


@dataclass
class PolishConfig(TrainConfig):
    """polish.py: TrainConfig's recipe, with defaults for a short 224 px polish of a model trained at 192 px.

    Why these defaults (FixRes, Touvron et al. 2019): RandomResizedCrop makes objects look larger in training than a
    center crop does at test time, so a 192 px model is best served at a higher resolution; 224 px is 1.17x, inside
    the usual 1.15-1.3x, and the size the ImageNet weights were trained at; other trained sizes are raised by the
    same ratio (`polish_size`). Re-estimating BatchNorm at the new size
    undoes part of the shift in activation statistics; a brief fine-tune does the rest, at a tenth of train.py's
    peak learning rate (1e-4 vs 1e-3) so that two epochs adapt the converged weights rather than retrain them, with
    no warmup (nothing large to warm up to) and without Mixup/CutMix (regularisers that pay off over long training;
    the polish is there to fit plain images at the new size). Not yet tuned on Food-101 by this project."""
    init: str | None = option("train.py/polish.py output folder, or Hub repo id org/name[@revision], to start from; "
                              "its model, weights and (by default) dataset are used", None, required=True)
    dataset: str | None = option("as in train.py; default: the dataset recorded in the init's train_config.yaml",
                                 None)
    dataset_config: str | None = option("as in train.py; default: the init's (train_config.yaml) on its dataset", None)
    image_column: str | None = option("as in train.py; default: the init's (train_config.yaml) on its dataset", None)
    label_column: str | None = option("as in train.py; default: the init's (train_config.yaml) on its dataset", None)
    val_fraction: float | None = option("as in train.py; default: the init's (train_config.yaml) on its dataset",
                                        None)
    image_size: int | None = option("polish and evaluation resolution in pixels; default: the init's size x 224/192, "
                                    "to a multiple of 16 (192 -> 224, 64 -> 80)", None)
    bn_reestimate: bool = option("re-estimate BatchNorm statistics at the new resolution before fine-tuning", True)
    bn_batches: int = option("shuffled training batches, with eval preprocessing, for the BatchNorm re-estimate",
                             50)
    epochs: int = option("fine-tuning passes over the training set; 0 only evaluates at the new resolution", 2)
    lr: float = option("peak learning rate", 1e-4)
    warmup_epochs: float = option("linear warmup length, in epochs", 0.0)
    mixup: float = option("Mixup alpha (0 disables)", 0.0)
    cutmix: float = option("CutMix alpha (0 disables)", 0.0)
    output_dir: str | None = option("where the polished model, metrics, model card and config are written; "
                                    "default: the init's folder with -SIZE appended (outputs/demo -> "
                                    "outputs/demo-80), outputs/NAME-SIZE for a Hub init", None)

    MIN_EPOCHS: ClassVar[int] = 0
    NOT_FLAGS: ClassVar[dict[str, str]] = dict.fromkeys(("model", "pretrained", "drop_rate"),
                                                   "takes it from the model it starts from (--init)")

    def check(self) -> None:
        if not self.init:
            raise ConfigError("--init is required: a folder written by train.py or polish.py, or a Hub repo id "
                              "(org/name)")
        if missing := missing_folder(self.init):
            raise ConfigError(f"--init {missing}")
        super().check()

    def resolved(self, trained_size: int) -> PolishConfig:
        """The config with the defaults that depend on the init filled in: its size raised by `polish_size`, and
        the output folder named after the init and that size."""
        size = self.image_size or polish_size(trained_size)
        init = Path(self.init).expanduser()
        name = str(init) if init.is_dir() else f"outputs/{self.init.partition('@')[0].split('/')[-1]}"
        return dataclasses.replace(self, image_size=size, output_dir=self.output_dir or f"{name}-{size}")


FIXRES_RATIO = 224 / 192  # the reference study's train -> polish sizes (README's results)
SIZE_STEP = 16  # px


def polish_size(trained_size: int) -> int:
    """polish.py's default resolution for a model trained (or last polished) at `trained_size` px: FixRes's modest
    raise of the test size by the reference study's 224/192 (1.17x; 1.15-1.3x is the usual rule), rounded to a
    multiple of SIZE_STEP and at least one step above: 192 -> 224, 224 -> 256, 160 -> 192, 64 -> 80 (1.25x). A
    multiple of 16 px halves evenly through ResNet-18's first four stride-2 layers, and is fine enough at small
    sizes (multiples of 32 would give 64 -> 64 or 96). A rule, not a measurement: evaluate the result (polish.py
    compares it with the init)."""
    return max(trained_size + SIZE_STEP, SIZE_STEP * round(trained_size * FIXRES_RATIO / SIZE_STEP))


def default_output_dir(dataset: str) -> str:
    """outputs/<the dataset's name>: outputs/demo, outputs/my_food for a folder (any path to it), outputs/food101 for
    the Hub's ethz/food101."""
    return f"outputs/{Path(dataset.partition('@')[0].rstrip('/')).name}"


def local_dataset(dataset: str | None) -> str | None:
    """A dataset that names an existing local folder, as an absolute path: the same folder from any directory,
    and never read as a Hub id (`org/name`) later. Hub ids and 'demo' stay as they are."""
    if dataset is None or dataset == "demo" or not Path(dataset).expanduser().is_dir():
        return dataset
    return str(Path(dataset).expanduser().resolve())


def parse_config(cls=TrainConfig, argv: list[str] | None = None, description: str | None = None,
                 prog: str | None = None):
    """Defaults < YAML preset < flags, checked (`cls.check`). Raises ConfigError (one line, naming the key or
    flag) on any bad key, flag or value; `--help` prints the flags and exits.

    A warmup from the preset or the defaults that is as long as the run (``--epochs 1`` with the preset's
    ``warmup_epochs: 2``: the LR would ramp up and the cosine would never start) is capped at MAX_WARMUP_SHARE
    of the run, and logged; the same warmup given as a flag is refused. Training from random weights
    (``--no-pretrained``) trains every layer unless --freeze is given: the default freeze keeps pretrained early
    layers, and frozen random layers would never learn."""
    cfg, flags, preset = parse(cls, argv, description, prog)
    if not cfg.pretrained and "freeze" not in flags and "freeze" not in preset and cfg.freeze_modules():
        logger.info(f"from random weights every layer trains (--freeze none): the default freeze of {cfg.freeze} "
                    f"keeps pretrained layers, and frozen random ones would never learn; pass --freeze to choose")
        cfg = dataclasses.replace(cfg, freeze="none")
    if "warmup_epochs" not in flags and cfg.epochs and cfg.warmup_epochs >= cfg.epochs:
        capped = cfg.epochs * MAX_WARMUP_SHARE
        source = "preset" if "warmup_epochs" in preset else "defaults"
        logger.warning(f"the warmup of {counted(cfg.warmup_epochs, 'epoch')} (from the {source}) is not shorter "
                       f"than the {cfg.epochs}-epoch run: warming up for {counted(capped, 'epoch')} "
                       f"({MAX_WARMUP_SHARE:.0%} of the run) instead; pass --warmup-epochs to choose")
        cfg = dataclasses.replace(cfg, warmup_epochs=capped)
    cfg.check()
    output_dir = cfg.output_dir or (default_output_dir(cfg.dataset) if cfg.dataset else None)  # polish: `resolved`
    return dataclasses.replace(cfg, dataset=local_dataset(cfg.dataset), output_dir=output_dir)
