"""Speed, measured in one run so that every ratio compares things timed side by side on the same machine.

    python benchmarks/bench.py                       # every section, several minutes on a quiet 2-core CPU
    python benchmarks/bench.py --sections model e2e  # some of them
    python benchmarks/bench.py --rounds 5            # more rounds for a steadier median

On generated Food-101-sized JPEGs (512x384, ~80 KB) and phone photos (4032x3024, ~2.3 MB; benchmarks/photos.py,
cached under $FOOD101HF_CACHE), training at --image-size and --batch-size (192 px, 32 by default):
  model   - model-only training steps on synthetic tensors (our model, freeze, precision, channels_last);
  e2e     - the README's command, `python train.py`, one epoch:
            the epoch's images/s (e2e) and the whole process's seconds (start-up, data, epoch, evaluation,
            report, export), against the model-only time for the same images; then the same on the phone photos;
  data    - the data path alone, one process with one torch thread (what one loader worker delivers), with
            TorchCodec's JPEG decoding and with Pillow's; on the phone photos, decoded at the rule's reduced size
            (food101hf.images.DecodeRule) and whole; and the bad-file check (data.drop_unreadable) on each set,
            against the check before it (each file decoded whole by Pillow, in one process);
  naive   - the Accelerate example's defaults: fp32, every layer trainable, PIL transforms, no loader workers;
  predict - the full `Predictor` API (decode, resize/crop, batching, model, top-k) against model-only inference at
            the same precision, batch and memory format, served at 224 px; then the warm single-image latency.
Sections run --rounds times, alternating, so that a busy moment on a shared machine hits all of them alike; each
figure is the median of its rounds, and each ratio the median of the per-round ratios.
"""

from __future__ import annotations

import food101hf  # noqa: F401  first: its OpenMP defaults must be set before torch loads OpenMP

import argparse
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import datasets
import torch
from PIL import Image

from food101hf import images as decoding
from food101hf.config import TrainConfig
from food101hf.demo import CLASSES, default_demo_dir
from food101hf.runtime import keep_freed_memory
from photos import food101_sized_jpegs, phone_jpegs

SECTIONS = ("model", "e2e", "data", "naive", "predict")


def machine() -> str:
    """The CPU (and GPU) the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def timed(images: int, run: Callable[[], object]) -> float:
    """Images per second of one call of `run` (and of the GPU work it queued)."""
    sync = torch.cuda.synchronize if torch.cuda.is_available() else lambda: None
    sync()
    start = time.perf_counter()
    run()
    sync()
    return images / (time.perf_counter() - start)


def model_only(cfg: TrainConfig, steps: int) -> Callable[[], float]:
    """Training steps of our model on synthetic tensors: the ceiling for the whole data path."""
    from food101hf.engine import create_accelerator, create_mixup, train_criterion
    from food101hf.model import create_model, create_optimizer, freeze

    accelerator = create_accelerator(cfg)
    model = create_model(cfg, len(CLASSES))
    freeze(model, cfg.freeze_modules())
    model.to(memory_format=torch.channels_last)
    optimizer = create_optimizer(model, cfg)
    model, optimizer = accelerator.prepare(model, optimizer)
    mixup = create_mixup(cfg, len(CLASSES))
    criterion = train_criterion(mixup, cfg.smoothing)
    images = torch.randn(cfg.batch_size, 3, cfg.image_size, cfg.image_size, device=accelerator.device)
    images = images.to(memory_format=torch.channels_last)
    labels = torch.randint(0, len(CLASSES), (cfg.batch_size,), device=accelerator.device)
    model.train()

    def run(count: int) -> None:
        for _ in range(count):
            x, y = mixup(images, labels)
            loss = criterion(model(x), y)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(model.parameters(), cfg.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    run(2)  # warm-up: oneDNN primitive creation
    return lambda: timed(steps * cfg.batch_size, lambda: run(steps))


def launched(folder: Path, cfg: TrainConfig, label: str = "") -> Callable[[], dict[str, float]]:
    """The README's command, `python train.py ...`, training one epoch over the folder (start-up, data, epoch,
    evaluation, report, export): the epoch's images/s as train.py measures it (metrics.json) and the whole process's
    seconds. Run once untimed first, so that the datasets cache exists, as on a user's second run."""
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, str(root / "train.py"), "--dataset", str(folder), "--no-pretrained", "--epochs", "1",
               "--warmup-epochs", str(cfg.warmup_epochs), "--image-size", str(cfg.image_size), "--batch-size",
               str(cfg.batch_size), "--num-workers", str(cfg.num_workers)]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}

    def run() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as out:
            start = time.perf_counter()
            subprocess.run([*command, "--output-dir", out], check=True, capture_output=True, env=environment)
            seconds = time.perf_counter() - start
            metrics = json.loads((Path(out) / "metrics.json").read_text())
        return {f"e2e{label}": metrics["train_images_per_second"], f"whole process{label} s": seconds}

    run()
    return run


def data_only(cfg: TrainConfig, count: int, torchcodec: bool = True, reduced: bool = True) -> Callable[[], float]:
    """What one loader worker does for train.py, in this process with one torch thread: the training loader's own
    dataset (read, decode, seeded augmentation, uint8 out), JPEGs decoded by TorchCodec (food101hf.images.decode), or by
    Pillow as before it; at the rule's reduced size, or whole as before it."""
    from timm.data import resolve_model_data_config

    from food101hf.data import load_splits
    from food101hf.loaders import build_loaders
    from food101hf.model import create_model

    splits = load_splits(cfg)
    data_config = resolve_model_data_config(create_model(cfg, len(splits.label_names)))
    dataset = build_loaders(splits, cfg, data_config, cfg.image_size, cfg.seed)[0].dataset
    count = min(count, len(dataset))

    def run() -> None:
        threads, decoder, scales = torch.get_num_threads(), decoding.decode_jpeg, decoding.DRAFT_SCALES
        torch.set_num_threads(1)
        decoding.decode_jpeg = decoder if torchcodec else None
        decoding.DRAFT_SCALES = scales if reduced else ()  # no scale to reduce to: every JPEG decoded whole
        try:
            for index in range(count):
                dataset[index]
        finally:
            torch.set_num_threads(threads)
            decoding.decode_jpeg, decoding.DRAFT_SCALES = decoder, scales

    return lambda: timed(count, run)


def _whole_decode(example: dict) -> dict:
    """The bad-file check before decoding at 1/8: Pillow decodes the file whole."""
    try:
        with Image.open(example["image"]["path"]) as image:
            image.load()
    except Exception as e:  # noqa: BLE001 - Pillow raises many kinds
        return {"error": f"{type(e).__name__}: {e}"}
    return {"error": ""}


def bad_file_check(folder: Path, whole: bool = False) -> Callable[[], float]:
    """Images per second of the bad-file check over the folder's training images, uncached: `data.drop_unreadable`
    (JPEGs at 1/8, a thread per usable core), or as before it (each decoded whole, one process, datasets.map's
    own loop: below 2,000 images it used no worker processes)."""
    from food101hf.data import drop_unreadable, load_dataset_dict

    found, _ = load_dataset_dict(TrainConfig(dataset=str(folder)))
    train = found["train"]
    undecoded = train.cast_column("image", datasets.Image(decode=False))

    def run() -> None:
        if whole:
            undecoded.map(_whole_decode, remove_columns=undecoded.column_names)
        else:
            drop_unreadable(train, "image", "train")

    return lambda: timed(len(train), run)


def naive(folder: Path, cfg: TrainConfig, steps: int) -> Callable[[], float]:
    """The baseline users start from (naive_loop.py), in a process of its own started as a user's script is, so
    without the allocator and OpenMP settings food101hf gives its own processes."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}  # OpenMP's default, as a script gets
    loop = subprocess.Popen([sys.executable, str(Path(__file__).with_name("naive_loop.py")), str(folder), cfg.model,
                             str(cfg.image_size), str(cfg.batch_size), str(cfg.lr), str(steps)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env)
    if loop.stdout.readline().strip() != "ready":  # warmed up, so it runs beside nothing else
        raise RuntimeError(f"the naive loop failed to start (exit status {loop.wait()})")

    def run() -> float:
        loop.stdin.write("\n")
        loop.stdin.flush()
        return float(loop.stdout.readline())

    return run


def predict_vs_model(folder: Path, cfg: TrainConfig) -> dict[str, Callable[[], float]]:
    """The Predictor API on the validation JPEGs, and model-only inference with the same forward (normalise,
    autocast, channels_last) on an already preprocessed uint8 batch; a random-weight 101-class ResNet-18 exported
    like train.py's, served at 224 px (timing does not depend on the weights)."""
    import timm

    from food101hf.predict import Predictor
    from food101hf.publish import export_model

    work = Path(tempfile.mkdtemp(prefix="food101hf-bench-"))
    export_model(timm.create_model(cfg.model, num_classes=101), work, [f"dish {i}" for i in range(101)],
                 image_size=224, crop_pct=0.95)
    predictor = Predictor(work, batch_size=cfg.batch_size)
    paths = [str(p) for p in sorted((folder / "validation").glob("*/*.jpg"))]
    paths = paths[:len(paths) // cfg.batch_size * cfg.batch_size] or paths
    batch = torch.randint(0, 256, (cfg.batch_size, *predictor.data_config["input_size"]), dtype=torch.uint8)
    batches = -(-len(paths) // cfg.batch_size)

    def model_batches() -> None:
        for _ in range(batches):
            predictor.probabilities(batch)

    predictor(paths)  # warm-up: kernels for each batch shape
    model_batches()
    return {"predict API": lambda: timed(len(paths), lambda: predictor(paths, top_k=5)),
            "model inference": lambda: timed(batches * cfg.batch_size, model_batches),
            "single image ms": lambda: 1000 / timed(1, lambda: predictor(paths[0]))}


def mean_megabytes(folder: Path) -> float:
    sizes = [path.stat().st_size for path in folder.glob("train/*/*.jpg")]
    return sum(sizes) / len(sizes) / 1e6


def median_spread(values: list[float]) -> str:
    return f"{statistics.median(values):7.1f}  ({min(values):.1f}-{max(values):.1f})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/bench.py", description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; figures are their medians")
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--num-workers", type=int, default=TrainConfig.num_workers)
    parser.add_argument("--train-images", type=int, default=1920, help="images in an epoch")
    parser.add_argument("--phone-images", type=int, default=192, help="images in an epoch of phone photos (0: none)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps of the model-only and naive loops")
    args = parser.parse_args(argv)
    keep_freed_memory()  # as train.py does (the naive loop runs in a process of its own)
    datasets.disable_progress_bars()
    datasets.disable_caching()  # the bad-file check is timed as a first run over a folder pays it

    per_class = args.train_images // len(CLASSES)
    cache = default_demo_dir().parent
    folder = food101_sized_jpegs(cache / "bench-jpegs-v3", per_class, per_class // 10)
    phone = phone_jpegs(cache / "bench-phone-v1", args.phone_images, max(args.phone_images // 10, 1)) \
        if args.phone_images else None
    cfg = TrainConfig(dataset=str(folder), pretrained=False, image_size=args.image_size,
                      batch_size=args.batch_size, num_workers=args.num_workers, epochs=1, warmup_epochs=0.2)
    phone_cfg = dataclasses.replace(cfg, dataset=str(phone))
    print(f"machine: {machine()}")
    print(f"{args.image_size} px, batch {args.batch_size}, {args.num_workers} loader workers, "
          f"{args.train_images} training images" + (f", {args.phone_images} phone photos (mean "
                                                     f"{mean_megabytes(phone):.1f} MB)" if phone else "")
          + f"; median (range) of {args.rounds} rounds")
    sections = set(args.sections)
    runs = {}  # name -> one round's measurement
    if "model" in sections:
        runs["model"] = model_only(cfg, args.steps)
    if "e2e" in sections:
        runs["e2e"] = launched(folder, cfg)
        if phone:
            runs["e2e, phone"] = launched(phone, phone_cfg, ", phone")
    if "data" in sections:
        runs["data"] = data_only(cfg, 16 * args.batch_size)
        runs["data, Pillow"] = data_only(cfg, 16 * args.batch_size, torchcodec=False)
        runs["check"] = bad_file_check(folder)
        runs["check, whole"] = bad_file_check(folder, whole=True)
        if phone:
            runs["data, phone"] = data_only(phone_cfg, args.phone_images)
            runs["data, phone whole"] = data_only(phone_cfg, args.phone_images, reduced=False)
            runs["check, phone"] = bad_file_check(phone)
            runs["check, phone whole"] = bad_file_check(phone, whole=True)
    if "naive" in sections:
        runs["naive"] = naive(folder, cfg, args.steps)
    if "predict" in sections:
        runs |= predict_vs_model(folder, cfg)
    rounds = {}  # figure -> its value in each round; a run may give several figures
    for _ in range(args.rounds):
        for name, run in runs.items():
            result = run()
            for figure, value in (result if isinstance(result, dict) else {name: result}).items():
                rounds.setdefault(figure, []).append(value)
    if "model" in rounds and "whole process s" in rounds:  # the model-only seconds of the epoch's images
        rounds["model-only s"] = [args.train_images // args.batch_size * args.batch_size / v
                                  for v in rounds["model"]]
    if "naive" in rounds and "whole process s" in rounds:
        rounds["naive epoch s"] = [args.train_images // args.batch_size * args.batch_size / v
                                   for v in rounds["naive"]]

    for name, values in rounds.items():
        unit = "s" if name.endswith(" s") else "" if name.endswith("ms") else "img/s"
        print(f"{name:>16}: {median_spread(values)} {unit}")

    def ratio(label: str, a: str, b: str, target: str = "") -> None:
        if a in rounds and b in rounds:
            values = [x / y for x, y in zip(rounds[a], rounds[b])]
            print(f"{label}: {statistics.median(values):.2f}  (rounds: {', '.join(f'{v:.2f}' for v in values)})"
                  f"{f'  target {target}' if target else ''}")

    ratio("e2e / model-only", "e2e", "model", ">= 0.90")
    ratio("whole process / model-only time", "whole process s", "model-only s", "<= 1.5")
    ratio("ours / naive, per training step", "e2e", "naive")
    ratio("naive epoch / our whole process", "naive epoch s", "whole process s", ">= 3.0")
    ratio("data path, TorchCodec / Pillow", "data", "data, Pillow", ">= 1.3")
    ratio("epoch, phone / Food-101-sized", "e2e, phone", "e2e", ">= 0.80")
    ratio("data path, phone: reduced / whole decode", "data, phone", "data, phone whole")
    ratio("bad-file check: ours / whole decode", "check", "check, whole")
    ratio("bad-file check, phone: ours / whole decode", "check, phone", "check, phone whole", ">= 10")
    ratio("predict API / model-only inference", "predict API", "model inference", ">= 0.90")
    return 0


if __name__ == "__main__":
    sys.exit(main())
