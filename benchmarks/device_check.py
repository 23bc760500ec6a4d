"""Device check of the decode-on-device data path on one GPU, in under 5 minutes, with nothing but torch,
torchvision, timm and accelerate installed (no datasets, evaluate or network) and food101hf not installed (it runs
from the checkout): TorchCodec and pillow-heif come as wheels in .device-wheels/ (ignored by git; fetch them with
the command below on a machine with PyPI).

    pip download --python-version 3.12 --only-binary=:all: --no-deps --platform manylinux_2_28_x86_64 \
        "torchcodec==0.16.*" pillow-heif -d .device-wheels   # torchcodec 0.16: the first with decode_jpeg
    python benchmarks/device_check.py             # on the GPU machine, from the repository root

On generated Food-101-sized JPEGs (512x384, ~80 KB, made there), at 192 px, it prints images/s side by side for the
decode-on-device path (`food101hf.device_data`: workers read files and draw boxes, the GPU decodes with nvJPEG and
crops/resizes/flips/normalises each batch) and for the CPU-worker path (workers decode with TorchCodec on the CPU
and crop with torchvision's v2 transforms, as `transforms.ImageTransform` does): decode only, decode + augment, and
end-to-end training steps, plus model-only training steps; median of --rounds. Target: >= 10,000 img/s end to end
on one H200 (a Food-101 epoch in ~8 s) with the decode-on-device path.
"""

from __future__ import annotations

import argparse
import glob
import os
import statistics
import subprocess
import sys
import tempfile
import time
from multiprocessing import Pool
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # food101hf from this checkout: the GPU machine cannot install it (no datasets there)
WHEELS = ROOT / ".device-wheels"

import food101hf  # noqa: E402, F401  before torch: its OpenMP defaults must be set before torch loads OpenMP


def ensure_wheels() -> str:
    """Install TorchCodec and pillow-heif from .device-wheels/ where they are missing; returns TorchCodec's
    version."""
    for module, wheel in (("torchcodec", "torchcodec-*.whl"), ("pillow_heif", "pillow_heif-*.whl")):
        try:
            __import__(module)
        except ImportError:
            wheels = sorted(glob.glob(str(WHEELS / wheel)))
            if not wheels:
                sys.exit(f"{module} is not installed and {WHEELS}/ holds no wheel: see this module's docstring")
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", *wheels],
                           check=True)
    import torchcodec

    return torchcodec.__version__


def _write_jpeg(args) -> None:
    import numpy as np
    from PIL import Image

    from food101hf.demo import CLASSES, render_image

    index, path = args
    rng = np.random.default_rng(index)
    pixels = np.asarray(render_image(CLASSES[index % len(CLASSES)], rng, (512, 384)), dtype=np.float32)
    pixels += rng.normal(0, 12, pixels.shape)  # sensor noise: a realistic JPEG size and decode cost
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path, quality=90)


def make_jpegs(folder: Path, count: int) -> list[str]:
    paths = [str(folder / f"{i}.jpg") for i in range(count)]
    with Pool(os.cpu_count()) as pool:
        pool.map(_write_jpeg, enumerate(paths), chunksize=64)
    return paths


class CpuWorkerSamples:
    """The CPU-worker path: decode (TorchCodec on the CPU) and timm's crop/flip as v2 transforms on uint8."""

    def __init__(self, paths, augment):
        self.paths, self.augment = paths, augment

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        from food101hf.images import decode

        pixels = decode(self.paths[index])
        return {"pixel_values": self.augment(pixels) if self.augment else pixels, "label": index % 101}


def as_list(samples: list) -> list:
    return samples


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/device_check.py", description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=192)
    parser.add_argument("--num-workers", type=int, default=max(1, (os.cpu_count() or 2) - 2))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cuda", help="cpu: a smoke test of this script (the tests run it)")
    args = parser.parse_args(argv)
    version = ensure_wheels()

    import timm
    import torch
    from timm.data import create_transform, resolve_model_data_config
    from timm.data.transforms import RandomResizedCropAndInterpolation
    from timm.utils.model import freeze
    from torchvision.transforms import v2

    from food101hf.device_data import EncodedSamples, collate_encoded, decode_batch, device_batches
    from food101hf.images import decode_jpeg

    device = torch.device(args.device)
    cuda = device.type == "cuda"
    if cuda and not torch.cuda.is_available():
        sys.exit("no GPU: the device check needs one (--device cpu only smoke-tests this script)")
    torch.backends.cudnn.benchmark = True
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    size, batch = args.image_size, args.batch_size
    print(f"{torch.cuda.get_device_name() if cuda else 'CPU'}; torch {torch.__version__} (CUDA "
          f"{torch.version.cuda}), torchcodec {version}, timm {timm.__version__}; {os.cpu_count()} CPUs, "
          f"{args.num_workers} loader workers; {size} px, batch {batch}, {args.images} images; median (range) of "
          f"{args.rounds} rounds")
    folder = Path(tempfile.mkdtemp(prefix="food101hf-device-check-"))
    start = time.perf_counter()
    paths = make_jpegs(folder, args.images)
    print(f"generated {len(paths)} JPEGs in {time.perf_counter() - start:.0f} s")

    # the recipe's model: ResNet-18, stem+layer1 frozen, channels_last, bf16 autocast, AdamW, clipping
    model = timm.create_model("resnet18", num_classes=101).to(device, memory_format=torch.channels_last)
    freeze(model, ["conv1", "bn1", "layer1"])
    data_config = resolve_model_data_config(model)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3, fused=cuda)
    mean, std = data_config["mean"], data_config["std"]

    def step(images, labels):
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = torch.nn.functional.cross_entropy(model(images), labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    class Device:  # what device_batches needs of an Accelerator
        def __init__(self):
            self.device, self.mixed_precision = device, "bf16"

    timm_train = create_transform(size, is_training=True, interpolation=data_config["interpolation"], hflip=0.5)
    crop = next(s for s in timm_train.transforms if isinstance(s, RandomResizedCropAndInterpolation))
    rows = [{"image": {"bytes": None, "path": p}, "label": i % 101} for i, p in enumerate(paths)]
    encoded = EncodedSamples(rows, "image", "label", crop, 0.5, size, data_config["crop_pct"])
    augment = v2.Compose([v2.RandomResizedCrop(size, crop.scale, crop.ratio, crop.interpolation, antialias=True),
                          v2.RandomHorizontalFlip(0.5)])
    loaders = {}

    def loader(name, dataset, collate=None):
        if name not in loaders:
            loaders[name] = torch.utils.data.DataLoader(
                dataset, batch_size=batch, shuffle=True, drop_last=True, num_workers=args.num_workers,
                pin_memory=cuda, persistent_workers=True, prefetch_factor=4, collate_fn=collate)
        return loaders[name]

    def normalised(pixels):
        x = pixels.to(device, non_blocking=True).to(memory_format=torch.channels_last).float()
        m = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255
        s = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255
        return x.sub_(m).div_(s)

    cpu_decode = CpuWorkerSamples(paths, None)
    cpu_augment = CpuWorkerSamples(paths, augment)
    ours = Device()

    def run(name):
        images = len(paths) // batch * batch
        sync()
        start = time.perf_counter()
        if name == "model-only":
            x = torch.randn(batch, 3, size, size, device=device).to(memory_format=torch.channels_last)
            y = torch.randint(0, 101, (batch,), device=device)
            for _ in range(images // batch):
                step(x, y)
        elif name == "GPU decode only":
            for b in loader("encoded", encoded, collate_encoded):
                decode_batch(b["images"], b["sizes"], device)
        elif name == "GPU decode + augment":
            for b in device_batches(loader("encoded", encoded, collate_encoded), ours, mean, std):
                pass
        elif name == "GPU end-to-end":
            for b in device_batches(loader("encoded", encoded, collate_encoded), ours, mean, std):
                step(b["pixel_values"], b["label"])
        elif name == "CPU decode only":  # uint8 images of different sizes: handed over as lists, not stacked
            for b in loader("cpu decode", cpu_decode, as_list):
                pass
        elif name == "CPU decode + augment":
            for b in loader("cpu", cpu_augment):
                normalised(b["pixel_values"])
        elif name == "CPU end-to-end":
            for b in loader("cpu", cpu_augment):
                step(normalised(b["pixel_values"]), b["label"].to(device, non_blocking=True))
        sync()
        return images / (time.perf_counter() - start)

    names = ["model-only", "GPU decode only", "GPU decode + augment", "GPU end-to-end", "CPU decode only",
             "CPU decode + augment", "CPU end-to-end"]
    if decode_jpeg is None:
        sys.exit("torchcodec does not load with this torch: see this module's docstring")
    for name in names:  # warm-up: workers started, cuDNN autotuned, nvJPEG initialised
        run(name)
    results = {name: [] for name in names}
    for _ in range(args.rounds):
        for name in names:
            results[name].append(run(name))
    model_only = statistics.median(results["model-only"])
    for name in names:
        values = results[name]
        print(f"{name:>22}: {statistics.median(values):9.0f} img/s  ({min(values):.0f}-{max(values):.0f})  "
              f"{statistics.median(values) / model_only:5.2f} x model-only")
    gpu_e2e = statistics.median(results["GPU end-to-end"])
    print(f"decode-on-device end-to-end: {gpu_e2e:.0f} img/s, target >= 10,000: "
          f"{'reached' if gpu_e2e >= 10_000 else 'NOT reached'}; "
          f"{gpu_e2e / statistics.median(results['CPU end-to-end']):.2f} x the CPU-worker path")
    return 0


if __name__ == "__main__":
    sys.exit(main())
