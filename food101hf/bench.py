"""Benchmarks, one section per subcommand; each compares things measured in the same run and names the machine.

    python -m food101hf.bench predict [--images 192] [--batch-size 32] [--rounds 7]

predict: the full `Predictor` API (decode, to_rgb, resize/crop, batching, normalise, model, top-k) on generated
Food-101-sized JPEGs (512x384, ~80 KB) against model-only inference at the same precision, batch size and
memory format, and their ratio; then the warm single-image latency. The model is a random-weight 101-class
ResNet-18 exported like train.py's, served at 224 px (timing does not depend on the weights).
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def machine() -> str:
    import torch

    cpu = platform.processor() or "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpu = f", {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{cpu}, {os.cpu_count()} cores{gpu}; torch {torch.__version__}, {torch.get_num_threads()} threads"


def food_like_jpeg(rng: np.random.Generator, size=(512, 384)) -> bytes:
    """A photo-like JPEG: smooth colour regions (a low-resolution image upscaled) plus fine texture, at a quality
    that gives Food-101's typical ~80 KB for 512x384."""
    from PIL import Image

    coarse = Image.fromarray(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    pixels = np.asarray(coarse, dtype=np.int16) + rng.normal(0, 13, (size[1], size[0], 3)).astype(np.int16)
    buffer = io.BytesIO()
    Image.fromarray(pixels.clip(0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def spread(values: list[float], fmt: str = ".1f") -> str:
    """Median and range: robust to the odd round slowed down by other work on the machine."""
    return (f"median {statistics.median(values):{fmt}} (range {min(values):{fmt}}-{max(values):{fmt}}, "
            f"{len(values)} rounds)")


def bench_predict(args) -> None:
    import timm
    import torch

    from .hub import export_model
    from .predict import Predictor

    work = Path(tempfile.mkdtemp(prefix="food101hf-bench-"))
    rng = np.random.default_rng(0)
    paths = []
    for i in range(args.images):
        paths.append(work / "images" / f"{i:04d}.jpg")
        paths[-1].parent.mkdir(exist_ok=True)
        paths[-1].write_bytes(food_like_jpeg(rng))
    kb = statistics.mean(p.stat().st_size for p in paths) / 1000
    model = timm.create_model("resnet18", num_classes=101)
    export_model(model, work / "model", [f"dish {i}" for i in range(101)], image_size=224, crop_pct=0.95)

    predictor = Predictor(work / "model", batch_size=args.batch_size, precision=args.precision)
    size = predictor.data_config["input_size"]
    print(f"machine: {machine()}")
    print(f"{args.images} JPEGs 512x384 (mean {kb:.0f} KB) -> {size[1]}x{size[2]}, batch {args.batch_size}, "
          f"{predictor.dtype or torch.float32} autocast, channels_last, device {predictor.device}")

    # model-only: the same forward (normalise, autocast, channels_last) on an already preprocessed uint8 batch
    batch = torch.randint(0, 256, (args.batch_size, *size), dtype=torch.uint8)
    batches = -(-args.images // args.batch_size)

    def model_only() -> float:
        start = time.perf_counter()
        for _ in range(batches):
            predictor.probabilities(batch)
        return batches * args.batch_size / (time.perf_counter() - start)

    def api() -> float:
        start = time.perf_counter()
        predictor([str(p) for p in paths], top_k=5)
        return len(paths) / (time.perf_counter() - start)

    predictor(str(paths[0]))  # warm-up: the first calls of each batch shape pick and build kernels
    api()
    model_only()
    api_rates, model_rates = [], []
    for _ in range(args.rounds):  # alternated, so that a busy moment on a shared machine hits both alike
        api_rates.append(api())
        model_rates.append(model_only())
    ratios = [a / m for a, m in zip(api_rates, model_rates)]
    print(f"predict API:      {spread(api_rates)} img/s")
    print(f"model only:       {spread(model_rates)} img/s")
    print(f"ratio API/model:  {spread(ratios, '.2f')}; per round: {', '.join(f'{r:.2f}' for r in ratios)}")

    latencies = []
    for path in paths[:args.latency_images]:
        start = time.perf_counter()
        predictor(str(path))
        latencies.append((time.perf_counter() - start) * 1000)
    print(f"single image, warm: median {statistics.median(latencies):.1f} ms, "
          f"p90 {np.percentile(latencies, 90):.1f} ms over {len(latencies)} images")


SECTIONS = {"predict": bench_predict}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m food101hf.bench", description=__doc__.splitlines()[0])
    sections = parser.add_subparsers(dest="section", required=True)
    predict = sections.add_parser("predict", help="predict API vs model-only throughput, and latency")
    predict.add_argument("--images", type=int, default=192, help="a multiple of the batch size")
    predict.add_argument("--batch-size", type=int, default=32)
    predict.add_argument("--rounds", type=int, default=7)
    predict.add_argument("--latency-images", type=int, default=30)
    predict.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    args = parser.parse_args(argv)
    SECTIONS[args.section](args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
