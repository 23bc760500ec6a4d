"""Training speed, measured in one run so that the ratios compare like with like.

    python -m food101hf.bench                 # every section, ~3 min on a 2-core CPU
    python -m food101hf.bench --sections model e2e data

On generated Food-101-sized JPEGs (512x384, ~65 KB, cached under $FOOD101HF_CACHE), at --image-size and
--batch-size (192 px, 32 by default), it prints images/s for
  model  - model-only training steps on synthetic tensors (our model, freeze, precision, channels_last);
  e2e    - our training loop over one epoch of the real data path (datasets + transforms + loader + Accelerate);
  data   - the data path alone, one process (what one loader worker delivers);
  naive  - the Accelerate example's defaults: fp32, every layer trainable, PIL transforms, no loader workers;
  epoch  - the whole `train.py` process (start-up, one epoch, evaluation, export) against the naive loop's epoch;
and the ratios e2e / model and ours / naive.
"""

from __future__ import annotations

import argparse
import io
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .config import TrainConfig
from .demo import CLASSES, default_demo_dir, render_image

SECTIONS = ("model", "e2e", "data", "naive", "epoch")


def food101_sized_jpegs(root: Path, per_class: int, val_per_class: int) -> Path:
    """An image folder of 512x384 JPEGs with photo-like noise (Food-101 images are at most 512 px, ~50-100 KB)."""
    marker = root / f".complete-{per_class}-{val_per_class}"
    if marker.exists():
        return root
    for split, count in (("train", per_class), ("validation", val_per_class)):
        for class_index, dish in enumerate(CLASSES):
            folder = root / split / dish
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([class_index, i, split == "train"])
                pixels = np.asarray(render_image(dish, rng, (512, 384)), dtype=np.float32)
                pixels += rng.normal(0, 9, pixels.shape)  # sensor noise: realistic JPEG size and decode cost
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    marker.touch()
    return root


def _rate(images: int, seconds: float) -> float:
    return images / seconds


def model_only(cfg: TrainConfig, steps: int) -> float:
    """Training steps of our model on synthetic tensors: the ceiling for the whole data path."""
    from .engine import create_accelerator, create_mixup, train_criterion
    from .model import create_model, create_optimizer, freeze

    accelerator = create_accelerator(cfg)
    model = create_model(cfg, len(CLASSES))
    freeze(model, cfg.freeze_modules())
    model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    mixup, criterion = create_mixup(cfg, len(CLASSES)), train_criterion(create_mixup(cfg, len(CLASSES)), 0.1)
    images = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size).to(memory_format=torch.channels_last)
    labels = torch.randint(0, len(CLASSES), (cfg.batch_size,))
    model.train()
    for step in range(steps + 2):  # two warm-up steps: oneDNN primitive creation
        if step == 2:
            start = time.perf_counter()
        x, y = mixup(images, labels)
        loss = criterion(model(x), y)
        accelerator.backward(loss)
        accelerator.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return _rate(steps * cfg.batch_size, time.perf_counter() - start)


def end_to_end(cfg: TrainConfig) -> float:
    """Our training loop over one epoch of the real data path, after one warm-up batch."""
    from accelerate.utils import set_seed
    from timm.data import resolve_model_data_config

    from .checkpoint import Progress
    from .data import build_loaders, load_splits
    from .engine import create_accelerator, create_mixup, create_scheduler, train_criterion, train_one_epoch
    from .model import create_model, create_optimizer, freeze

    accelerator = create_accelerator(cfg)
    set_seed(cfg.seed)
    splits = load_splits(cfg)
    model = create_model(cfg, len(splits.label_names))
    freeze(model, cfg.freeze_modules())
    model.to(memory_format=torch.channels_last)
    train_loader, _ = build_loaders(splits, cfg, resolve_model_data_config(model), cfg.image_size, cfg.seed)
    optimizer = create_optimizer(model, cfg)
    model, optimizer, train_loader = accelerator.prepare(model, optimizer, train_loader)
    scheduler = create_scheduler(optimizer, cfg, len(train_loader), 1)
    mixup = create_mixup(cfg, len(splits.label_names))
    criterion = train_criterion(mixup, cfg.smoothing)

    def epoch(loader) -> float:
        return train_one_epoch(accelerator, model, loader, optimizer, scheduler, criterion, mixup, cfg,
                               Progress(signature={}), checkpoint=lambda: None)

    epoch(accelerator.skip_first_batches(train_loader, len(train_loader) - 1))  # warm-up: workers, oneDNN
    return epoch(train_loader)


def data_only(cfg: TrainConfig, count: int) -> float:
    """Decode + augment + normalise in this process, as one loader worker does (one torch thread)."""
    from timm.data import resolve_model_data_config

    from .data import SeededAugmentation, build_transform, load_splits, with_transform
    from .model import create_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # what DataLoader workers run with
    splits = load_splits(cfg)
    data_config = resolve_model_data_config(create_model(cfg, len(splits.label_names)))
    dataset = SeededAugmentation(with_transform(splits.train, build_transform(data_config, cfg.image_size, True,
                                                                               cfg)), cfg.seed)
    start = time.perf_counter()
    for index in range(count):
        dataset[index]
    rate = _rate(count, time.perf_counter() - start)
    torch.set_num_threads(threads)
    return rate


def naive(folder: Path, cfg: TrainConfig, steps: int) -> float:
    """The baseline users start from: fp32, all layers trainable, torchvision PIL transforms in the main process."""
    import timm
    from torchvision import transforms

    transform = transforms.Compose([transforms.RandomResizedCrop(cfg.image_size), transforms.RandomHorizontalFlip(),
                                    transforms.ToTensor(),
                                    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    files = sorted((folder / "train").glob("*/*.jpg"))
    labels = {name: i for i, name in enumerate(sorted({f.parent.name for f in files}))}
    rng = np.random.default_rng(0)
    model = timm.create_model(cfg.model, num_classes=len(labels))
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    model.train()
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        batch = rng.choice(len(files), cfg.batch_size, replace=False)
        images = torch.stack([transform(Image.open(files[i]).convert("RGB")) for i in batch])
        targets = torch.tensor([labels[files[i].parent.name] for i in batch])
        loss = torch.nn.functional.cross_entropy(model(images), targets)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    return _rate(steps * cfg.batch_size, time.perf_counter() - start)


def whole_epoch(folder: Path, cfg: TrainConfig) -> float:
    """Seconds for `train.py` to start, train one epoch over the folder, evaluate and export."""
    script = Path(__file__).resolve().parents[1] / "train.py"
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, str(script), "--dataset", str(folder), "--no-pretrained", "--epochs", "1",
                        "--image-size", str(cfg.image_size), "--batch-size", str(cfg.batch_size),
                        "--num-workers", str(cfg.num_workers), "--output-dir", out],
                       check=True, capture_output=True)
        return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m food101hf.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=TrainConfig.num_workers)
    parser.add_argument("--train-images", type=int, default=1920, help="images in the one-epoch run")
    parser.add_argument("--steps", type=int, default=12, help="timed steps of the model-only and naive loops")
    args = parser.parse_args(argv)

    per_class = args.train_images // len(CLASSES)
    folder = food101_sized_jpegs(default_demo_dir().parent / "bench-jpegs-v1", per_class, per_class // 10)
    cfg = TrainConfig(dataset=str(folder), pretrained=False, image_size=args.image_size,
                      batch_size=args.batch_size, num_workers=args.num_workers, epochs=1)
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}; {args.image_size} px, batch {args.batch_size}, "
          f"{args.num_workers} loader workers")
    results = {}
    if "model" in args.sections:
        results["model"] = model_only(cfg, args.steps)
    if "e2e" in args.sections:
        results["e2e"] = end_to_end(cfg)
    if "data" in args.sections:
        results["data"] = data_only(cfg, 4 * args.batch_size)
    if "naive" in args.sections:
        results["naive"] = naive(folder, cfg, max(4, args.steps // 2))
    for name, rate in results.items():
        print(f"{name:>6}: {rate:7.1f} img/s")
    if {"model", "e2e"} <= results.keys():
        print(f"e2e / model-only: {results['e2e'] / results['model']:.2f}  (target >= 0.90)")
    if {"e2e", "naive"} <= results.keys():
        print(f"ours / naive, per training step: {results['e2e'] / results['naive']:.2f}")
    if "epoch" in args.sections and "naive" in results:
        ours = whole_epoch(folder, cfg)
        naive_epoch = per_class * len(CLASSES) / results["naive"]
        print(f"one epoch of {per_class * len(CLASSES)} images: train.py {ours:.1f} s (whole process) vs naive "
              f"{naive_epoch:.1f} s (its training steps alone): {naive_epoch / ours:.2f}x  (target >= 3.0)")


if __name__ == "__main__":
    main()
