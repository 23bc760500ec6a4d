"""DataLoaders for training, evaluation and polish's BatchNorm re-estimate, with augmentation that exact resume can
reproduce.

    train_loader, eval_loader = build_loaders(splits, cfg, data_config, cfg.image_size, cfg.seed)
    bn_loader = batchnorm_loader(splits, cfg, data_config)     # polish.py: shuffled train images, eval preprocessing

Every loader delivers uint8 images (`transforms.model_input` normalises each batch on the device); its workers
leave stop signals to the training process (`preemption.ignore_stop_signals`).
"""

from __future__ import annotations

import contextlib
import random

import numpy as np
import torch
from datasets import Dataset
from datasets import Image as ImageFeature
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms

from .config import TrainConfig
from .data import Splits
from .device_data import EncodedSamples, collate_encoded
from .errors import DatasetError, UsageError
from .preemption import ignore_stop_signals
from .transforms import build_transform, with_transform


def _seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global RNGs, which torchvision and timm transforms draw from. The CPU
    generator only: torch.manual_seed also queues a seed for every lazily initialised accelerator backend,
    recording a stack trace each time (0.4 ms a sample, a fifth of the data path's CPU time)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.random.default_generator.manual_seed(seed)


@contextlib.contextmanager
def _seeded(seed: int):
    """The global RNGs seeded for one sample. In the training process (a worker-less loader) they are restored
    afterwards, so that the caller's streams (Mixup's) are intact; a loader worker's streams serve nothing else,
    so there they are only seeded: saving and restoring Python's and NumPy's states took 0.45 of the 0.65 ms a
    sample spent here (this project's 2-core machine, busy), on digits a sixth of a worker's time."""
    if torch.utils.data.get_worker_info() is not None:
        _seed(seed)
        yield
        return
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        _seed(seed)
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


def build_loaders(splits: Splits, cfg: TrainConfig, data_config: dict, image_size: int, seed: int):
    """Train loader (shuffled, drop_last: Mixup needs even batches) and eval loader (every image, in order), both
    of uint8 images: `model_input` normalises each batch. With cfg.decode_on_device, loaders of encoded images,
    crop boxes and flips instead, which `device_data.device_batches` turns into model input on the device. Raises
    DatasetError when the training images are fewer than one batch (and cfg.epochs asks for training)."""
    train_transform = build_transform(data_config, image_size, True, cfg, normalize=False)
    eval_transform = build_transform(data_config, image_size, False, normalize=False)
    collate = None
    if cfg.decode_on_device:
        if cfg.color_jitter or cfg.auto_augment:
            raise UsageError("--decode-on-device crops, resizes and flips only: drop --color-jitter and "
                             "--auto-augment, or the flag")
        steps = train_transform.timm.transforms
        crop = next(step for step in steps if isinstance(step, RandomResizedCropAndInterpolation))
        hflip = next((step.p for step in steps if isinstance(step, transforms.RandomHorizontalFlip)), 0.0)
        train, evaluation = (EncodedSamples(dataset.cast_column("image", ImageFeature(decode=False)), "image",
                                            "label", train_crop, hflip, image_size, data_config["crop_pct"], rule)
                             for dataset, train_crop, rule in ((splits.train, crop, train_transform.rule),
                                                               (splits.eval, None, eval_transform.rule)))
        train, collate = SeededAugmentation(train, seed), collate_encoded
    else:
        train = SeededAugmentation(with_transform(splits.train, train_transform), seed)
        evaluation = with_transform(splits.eval, eval_transform)
    common = dict(batch_size=cfg.batch_size, num_workers=cfg.num_workers, pin_memory=torch.cuda.is_available(),
                  persistent_workers=cfg.num_workers > 0, worker_init_fn=ignore_stop_signals,
                  collate_fn=collate)
    train_loader = torch.utils.data.DataLoader(train, shuffle=True, drop_last=True,
                                               generator=torch.Generator().manual_seed(seed), **common)
    eval_loader = torch.utils.data.DataLoader(evaluation, shuffle=False, **common)
    if cfg.epochs and len(train_loader) == 0:
        n = len(splits.train)
        fits = min(n, 1 << max(1, (n // 3).bit_length() - 1))  # a power of two: even (Mixup), ~3 batches an epoch
        raise DatasetError(f"{n} training images are fewer than one batch of {cfg.batch_size}: lower --batch-size "
                           f"(e.g. --batch-size {fits}: {n // fits} batches an epoch)")
    return train_loader, eval_loader


def batchnorm_loader(splits: Splits, cfg: TrainConfig, data_config: dict,
                     image_size: int) -> torch.utils.data.DataLoader:
    """Shuffled training images with the eval preprocessing at `image_size` (what the model will see when served),
    for re-estimating BatchNorm statistics (polish.py). Seeded: every process draws the same batches, so all
    replicas get identical statistics without relying on DDP's broadcast."""
    images = with_transform(splits.train, build_transform(data_config, image_size, False, normalize=False))
    return torch.utils.data.DataLoader(images, batch_size=cfg.batch_size, shuffle=True, num_workers=cfg.num_workers,
                                       worker_init_fn=ignore_stop_signals,
                                       generator=torch.Generator().manual_seed(cfg.seed))
