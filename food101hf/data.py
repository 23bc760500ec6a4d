"""Datasets, transforms and loaders.

A dataset is a Hub id (``ethz/food101``, through ``datasets.load_dataset``), a local image folder or ``demo``
(``food101hf.folders.load_folder``); images are decoded and augmented on the fly with ``with_transform``.
"""

from __future__ import annotations

import contextlib
import io
import logging
import random
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, DatasetDict, load_dataset
from datasets import Image as ImageFeature
from PIL import ExifTags, Image, ImageOps
from timm.data import create_transform
from timm.data.transforms import MaybePILToTensor, MaybeToTensor, RandomResizedCropAndInterpolation
from torchvision import transforms
from torchvision.transforms import InterpolationMode, v2
from torchvision.transforms.functional import pil_to_tensor

from .config import TrainConfig
from .decode import decode, open_rgb
from .device_data import EncodedSamples, collate_encoded
from .folders import MAX_ASPECT_RATIO, check_aspect_ratio, load_folder
from .preemption import ignore_stop_signals

logger = logging.getLogger(__name__)

EVAL_SPLITS = ("validation", "test")  # Food-101 on the Hub calls its test set "validation"


class DatasetError(ValueError):
    """A dataset that cannot be trained on, with what to do about it."""


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


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: EXIF-rotated, transparency composited on white, 16-bit scaled down. Decoded
    here, so a broken file fails inside the caller's error handling; an upright RGB image comes back as it is
    (Pillow's no-op rotation and conversion would each copy it: 0.08 ms per Food-101 photo)."""
    image.load()
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit greyscale; a plain convert() would clip everything above 255 to white
        image = Image.fromarray((np.asarray(image, dtype=np.float32) / 257).clip(0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image if image.mode == "RGB" else image.convert("RGB")


def bound_aspect_ratio(image: Image.Image | torch.Tensor,
                       max_ratio: float = MAX_ASPECT_RATIO) -> Image.Image | torch.Tensor:
    """The image's centre, cropped along its long side to at most `max_ratio` times the short side, so that
    resizing the short side to the model's size costs bounded memory and time (a 1x12,000 px strip resized to
    219 px would be 219x2.6M px: +1.5 GB). Images within the ratio, every photo the bad-file check admits, come
    back as they are; beyond it, the eval transform's square centre crop sees the same pixels as without it.
    A PIL image or a C x H x W tensor (a view of it)."""
    pil = isinstance(image, Image.Image)
    width, height = image.size if pil else (image.shape[-1], image.shape[-2])
    short = max(min(width, height), 1)
    if max(width, height) <= max_ratio * short:
        return image
    long = int(max_ratio * short)
    if width > height:
        left = (width - long) // 2
        return image.crop((left, 0, left + long, height)) if pil else image[..., left:left + long]
    top = (height - long) // 2
    return image.crop((0, top, width, top + long)) if pil else image[..., top:top + long, :]


def on_uint8_tensors(transform: transforms.Compose) -> v2.Compose | None:
    """timm's transform rebuilt step by step with torchvision's v2 transforms, same sizes, scales, ratios,
    interpolation, flips, jitter, mean and std, applied to a uint8 tensor: v2 crops and resizes uint8 directly.
    Per 512x384 photo on one thread, a 192 px RandomResizedCrop takes 0.19 ms where Pillow's bicubic takes
    0.70 ms, and the eval resize 0.43 ms instead of 1.4 ms; results are within one grey level of Pillow's.
    None when a step has no v2 twin (auto-augment, a random interpolation, timm's 'border' crop mode)."""
    steps = []
    for step in transform.transforms:
        if isinstance(step, RandomResizedCropAndInterpolation) and isinstance(step.interpolation,
                                                                              InterpolationMode):
            steps.append(v2.RandomResizedCrop(step.size, step.scale, step.ratio, step.interpolation,
                                              antialias=True))
        elif isinstance(step, transforms.Resize):
            steps.append(v2.Resize(step.size, step.interpolation, step.max_size, antialias=True))
        elif isinstance(step, transforms.CenterCrop):
            steps.append(v2.CenterCrop(step.size))
        elif isinstance(step, transforms.RandomHorizontalFlip):
            steps.append(v2.RandomHorizontalFlip(step.p))
        elif isinstance(step, transforms.ColorJitter):
            jitter = dict(brightness=step.brightness, contrast=step.contrast, saturation=step.saturation,
                          hue=step.hue)
            if any(value is not None for value in jitter.values()):  # timm adds a no-op one for jitter 0
                steps.append(v2.ColorJitter(**jitter))
        elif isinstance(step, MaybeToTensor):
            steps.append(v2.ToDtype(torch.float32, scale=True))
        elif isinstance(step, transforms.Normalize):
            steps.append(v2.Normalize([float(m) for m in step.mean], [float(s) for s in step.std]))
        elif not isinstance(step, MaybePILToTensor):
            return None
    return v2.Compose(steps)


class ImageTransform:
    """A timm transform for RGB images that runs as its v2 twin on the image's uint8 tensor when it has one
    (`on_uint8_tensors`), else as timm built it on a PIL image."""

    def __init__(self, transform: transforms.Compose):
        self.timm, self.tensor = transform, on_uint8_tensors(transform)

    def __call__(self, image: Image.Image | torch.Tensor) -> torch.Tensor:
        image = bound_aspect_ratio(image)
        if self.tensor:
            return self.tensor(image if isinstance(image, torch.Tensor) else pil_to_tensor(image))
        return self.timm(image if isinstance(image, Image.Image) else v2.functional.to_pil_image(image))

    def from_encoded(self, value) -> torch.Tensor:
        """Decode (`food101hf.decode`: TorchCodec for JPEGs) and transform; Pillow when only timm's PIL
        transform applies."""
        return self(decode(value)) if self.tensor else self(open_rgb(value))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.tensor or self.timm})"


def build_transform(data_config: dict, image_size: int, is_training: bool, cfg: TrainConfig | None = None,
                    normalize: bool = True) -> ImageTransform:
    """timm's transform at `image_size`, with interpolation, mean, std and crop_pct from the model's data config;
    without `normalize`, it ends in a uint8 tensor."""
    common = dict(input_size=(3, image_size, image_size), interpolation=data_config["interpolation"],
                  mean=data_config["mean"], std=data_config["std"], normalize=normalize)
    if not is_training:
        return ImageTransform(create_transform(**common, crop_pct=data_config["crop_pct"], is_training=False))
    return ImageTransform(create_transform(**common, is_training=True, hflip=0.5, color_jitter=cfg.color_jitter,
                                           auto_augment=cfg.auto_augment))


def model_input(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    """A batch from the loaders as the model's input, on the batch's device and channels_last: uint8 images
    (N x 3 x H x W) are scaled and normalised with the model's mean and std, a whole batch at once. The loaders
    deliver uint8, a quarter of float32's bytes between processes and to a GPU (timm's PrefetchLoader does the
    same for (input, target) loaders); a float batch is taken as already normalised."""
    x = pixels.to(memory_format=torch.channels_last)
    if x.dtype != torch.uint8:
        return x
    mean = torch.tensor(mean, device=x.device).view(1, -1, 1, 1) * 255
    std = torch.tensor(std, device=x.device).view(1, -1, 1, 1) * 255
    return x.float().sub_(mean).div_(std)


def _apply(transform: ImageTransform, image_column: str, label_column: str, batch: dict) -> dict:
    return {"pixel_values": [transform.from_encoded(image) for image in batch[image_column]],
            "label": batch[label_column]}


def with_transform(dataset: Dataset, transform: ImageTransform, image_column: str = "image",
                   label_column: str = "label"):
    """Decode + augment on access. The image column is read undecoded (`Image(decode=False)`) so that we pick the
    decoder (`food101hf.decode`). A module-level function, so loader workers can pickle it on any platform."""
    raw = dataset.cast_column(image_column, ImageFeature(decode=False))
    return raw.with_transform(partial(_apply, transform, image_column, label_column))


@contextlib.contextmanager
def _seeded(seed: int):
    """Seed Python's, NumPy's and torch's global RNGs (which torchvision and timm transforms draw from) for one
    sample, restoring them afterwards so that the caller's streams (Mixup's, in a worker-less loader) are intact."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed)
        # the CPU generator only: torch.manual_seed also queues a seed for every lazily initialised accelerator
        # backend, recording a stack trace each time (0.4 ms a sample, a fifth of the data path's CPU time)
        torch.random.default_generator.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


class SeededAugmentation(torch.utils.data.Dataset):
    """Training samples whose random augmentation depends only on (seed, epoch, index), never on which loader
    worker draws them or what it drew before. Skipped batches are never loaded, so without this a mid-epoch
    resume would see different crops; with it, the resumed run is bitwise identical to an uninterrupted one."""

    def __init__(self, dataset: Dataset, seed: int):
        self.dataset, self.seed = dataset, seed
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()  # shared with persistent workers

    def set_epoch(self, epoch: int) -> None:
        self._epoch.fill_(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        sample_seed = int(np.random.SeedSequence([self.seed, int(self._epoch), index]).generate_state(1)[0])
        with _seeded(sample_seed):
            return self.dataset[index]


def _check_image(example: dict, image_column: str) -> dict:
    image = example[image_column]
    try:
        with Image.open(io.BytesIO(image["bytes"]) if image["bytes"] else image["path"]) as opened:
            check_aspect_ratio(*opened.size)  # known from the header: a strip is rejected before it is decoded
            opened.load()  # truncated files only fail here, not at open()
    except Exception as e:  # noqa: BLE001 - OSError, SyntaxError, DecompressionBombError (not an OSError), ...
        return {"error": f"{type(e).__name__}: {e}"}
    return {"error": ""}


def drop_unreadable(dataset: Dataset, image_column: str, split: str, num_proc: int) -> tuple[Dataset, list[dict]]:
    """Decode every image once (cached by datasets' fingerprint, so only the first run pays) and drop those that
    cannot be, or whose aspect ratio is beyond folders.MAX_ASPECT_RATIO, so that a bad file is named up front
    instead of crashing a run an hour in."""
    raw = dataset.cast_column(image_column, ImageFeature(decode=False))
    checked = raw.map(_check_image, fn_kwargs={"image_column": image_column}, remove_columns=raw.column_names,
                      num_proc=num_proc if num_proc > 1 and len(raw) > 2000 else None,  # processes cost ~1 s
                      desc=f"checking {split} images")
    errors = checked["error"]
    bad = [i for i, error in enumerate(errors) if error]
    if not bad:
        return dataset, []
    skipped = [{"split": split, "file": raw[i][image_column]["path"], "error": errors[i]} for i in bad]
    return dataset.select([i for i, error in enumerate(errors) if not error]), skipped


def load_dataset_dict(cfg: TrainConfig) -> DatasetDict:
    """Every split of cfg.dataset (a Hub id, a local folder or 'demo'); images are decoded on access."""
    if cfg.dataset == "demo":
        from .demo import default_demo_dir, make_demo

        return load_folder(make_demo(default_demo_dir()))
    if Path(cfg.dataset).expanduser().is_dir():
        return load_folder(Path(cfg.dataset).expanduser())
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", cfg.dataset):
        raise DatasetError(f"--dataset {cfg.dataset}: no such folder (in {Path.cwd()}), and not a Hub dataset "
                           f"id (org/name)")
    from datasets.exceptions import DatasetNotFoundError

    from .hub import hub_errors

    hint = "pass a local image folder or --dataset demo"
    with hub_errors(f"dataset {cfg.dataset!r}", hint=hint):
        try:
            return load_dataset(cfg.dataset)
        except DatasetNotFoundError:
            from huggingface_hub import constants

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

    train, skipped = drop_unreadable(train, cfg.image_column, "train", cfg.num_workers)
    evaluation, skipped_eval = drop_unreadable(evaluation, cfg.image_column, "eval", cfg.num_workers)
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


def build_loaders(splits: Splits, cfg: TrainConfig, data_config: dict, image_size: int, seed: int):
    """Train loader (shuffled, drop_last: Mixup needs even batches) and eval loader (every image, in order), both
    of uint8 images: `model_input` normalises each batch. With cfg.decode_on_device, loaders of encoded images,
    crop boxes and flips instead, which `device_data.device_batches` turns into model input on the device."""
    columns = (cfg.image_column, cfg.label_column)
    train_transform = build_transform(data_config, image_size, True, cfg, normalize=False)
    collate = None
    if cfg.decode_on_device:
        if cfg.color_jitter or cfg.auto_augment:
            raise ValueError("--decode-on-device crops, resizes and flips only: drop --color-jitter and "
                             "--auto-augment, or the flag")
        steps = train_transform.timm.transforms
        crop = next(step for step in steps if isinstance(step, RandomResizedCropAndInterpolation))
        hflip = next((step.p for step in steps if isinstance(step, transforms.RandomHorizontalFlip)), 0.0)
        train, evaluation = (EncodedSamples(dataset.cast_column(cfg.image_column, ImageFeature(decode=False)),
                                            *columns, train_crop, hflip, image_size, data_config["crop_pct"])
                             for dataset, train_crop in ((splits.train, crop), (splits.eval, None)))
        train, collate = SeededAugmentation(train, seed), collate_encoded
    else:
        train = SeededAugmentation(with_transform(splits.train, train_transform, *columns), seed)
        evaluation = with_transform(splits.eval, build_transform(data_config, image_size, False, normalize=False),
                                    *columns)
    common = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available(),
                  persistent_workers=cfg.num_workers > 0, worker_init_fn=ignore_stop_signals,
                  collate_fn=collate)
    train_loader = torch.utils.data.DataLoader(train, shuffle=True, drop_last=True,
                                               generator=torch.Generator().manual_seed(seed), **common)
    eval_loader = torch.utils.data.DataLoader(evaluation, shuffle=False, **common)
    return train_loader, eval_loader
