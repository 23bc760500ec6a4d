"""The whole run against timm's own train.py: same recipe, same folder, same machine, back to back.

    git clone https://github.com/huggingface/pytorch-image-models /tmp/timm    # timm's train.py, run as it is
    pip install scikit-learn                                                  # the digits, its real image set
    python benchmarks/vs_timm.py --timm /tmp/timm                             # ~15 min on a quiet 2-core CPU

The data: scikit-learn's digits (1,797 8x8 grey images, 10 classes) as an image folder, a stratified 80/20 split
(1,437 train / 360 validation, seed 0), written once under $FOOD101HF_CACHE. The recipe: ResNet-18 from scratch at
64 px, 10 epochs, batch 32, AdamW lr 1e-3 wd 0.05, cosine to 1e-6 after 2 warmup epochs (per update, from 1e-5),
Mixup 0.2 / CutMix 1.0, label smoothing 0.1, gradient clipping 1.0, channels_last, 2 loader workers, bf16 where the
CPU has it (AVX-512 BF16 or AMX), else fp32 for both. Ours runs as the README says (`python train.py`) and as
`accelerate launch --config_file accelerate_config.yaml train.py` (the same single process under Accelerate's
launcher); timm's train.py runs with `python` and the clone's own timm package (PYTHONPATH), with the flags that make
its defaults ours (colour jitter 0, bicubic, warmup from 1e-5 per update). Each round runs the three, each going
first in turn; it prints each run's whole-process seconds (from the command to its exit) and
last-epoch top-1, then the median ratios. This script imports neither torch nor food101hf, so neither
run inherits settings from it.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RECIPE = dict(image_size=64, epochs=10, batch_size=32, lr=1e-3, weight_decay=0.05, warmup_epochs=2, min_lr=1e-6,
              mixup=0.2, cutmix=1.0, smoothing=0.1, clip_grad=1.0, workers=2)


def digits_folder(root: Path) -> Path:
    """scikit-learn's digits as train/<digit>/*.png and validation/<digit>/*.png (8x8, grey, 0-16 scaled to
    0-255), a stratified 80/20 split with seed 0."""
    marker = root / ".complete"
    if marker.exists():
        return root
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    indices = np.arange(len(digits.target))
    train, validation = train_test_split(indices, test_size=0.2, stratify=digits.target, random_state=0)
    for split, chosen in (("train", train), ("validation", validation)):
        for i in chosen:
            folder = root / split / str(digits.target[i])
            folder.mkdir(parents=True, exist_ok=True)
            pixels = (digits.images[i] * 255 / 16).round().astype(np.uint8)
            Image.fromarray(pixels, mode="L").save(folder / f"{i}.png")
    marker.touch()
    return root


def native_bf16() -> bool:
    """As food101hf.runtime.cpu_has_native_bf16, without importing food101hf (which sets OpenMP defaults)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


def ours(data: Path, out: Path, bf16: bool, launcher: bool = False) -> list[str]:
    """The README's command (`python train.py`), or the same single process under `accelerate launch`, whose CLI
    imports torch, timm and transformers before it starts train.py (for its estimate-memory command)."""
    r = RECIPE
    launch = [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
              str(ROOT / "accelerate_config.yaml")] if launcher else [sys.executable]
    return [*launch, str(ROOT / "train.py"), "--dataset", str(data), "--no-pretrained",
            "--freeze", "none", "--image-size", str(r["image_size"]), "--epochs", str(r["epochs"]),
            "--batch-size", str(r["batch_size"]), "--lr", str(r["lr"]), "--weight-decay", str(r["weight_decay"]),
            "--warmup-epochs", str(r["warmup_epochs"]), "--min-lr", str(r["min_lr"]), "--mixup", str(r["mixup"]),
            "--cutmix", str(r["cutmix"]), "--smoothing", str(r["smoothing"]), "--clip-grad", str(r["clip_grad"]),
            "--num-workers", str(r["workers"]), "--mixed-precision", "bf16" if bf16 else "no",
            "--output-dir", str(out)]


def theirs(timm: Path, data: Path, out: Path, bf16: bool) -> list[str]:
    r = RECIPE
    return [sys.executable, str(timm / "train.py"), "--data-dir", str(data), "--train-split", "train",
            "--val-split", "validation", "--model", "resnet18", "--num-classes", "10", "--img-size",
            str(r["image_size"]), "--epochs", str(r["epochs"]), "-b", str(r["batch_size"]), "--opt", "adamw",
            "--lr", str(r["lr"]), "--weight-decay", str(r["weight_decay"]), "--sched", "cosine", "--sched-on-updates",
            "--warmup-epochs", str(r["warmup_epochs"]), "--warmup-prefix", "--warmup-lr", "1e-5", "--min-lr",
            str(r["min_lr"]), "--mixup", str(r["mixup"]), "--cutmix", str(r["cutmix"]), "--smoothing",
            str(r["smoothing"]), "--clip-grad", str(r["clip_grad"]), "--color-jitter", "0", "--train-interpolation",
            "bicubic", "--channels-last", "-j", str(r["workers"]), "--device", "cpu", "--output", str(out),
            "--experiment", "run", *(["--amp", "--amp-dtype", "bfloat16"] if bf16 else [])]


def top1(name: str, out: Path) -> float:
    """The last epoch's top-1 on validation, as a fraction."""
    if name != "timm":
        return json.loads((out / "metrics.json").read_text())["top1"]
    with (out / "run" / "summary.csv").open() as f:
        return float(list(csv.DictReader(f))[-1]["eval_top1"]) / 100


def run(command: list[str], env: dict, log: Path) -> float:
    start = time.perf_counter()
    with log.open("w") as f:
        subprocess.run(command, check=True, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python benchmarks/vs_timm.py", description=__doc__.splitlines()[0])
    parser.add_argument("--timm", type=Path, required=True, help="a clone of huggingface/pytorch-image-models")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the three runs, each going first in turn")
    parser.add_argument("--epochs", type=int, default=RECIPE["epochs"], help="fewer for a quick check")
    parser.add_argument("--keep", type=Path, help="keep each run's output folder and log here")
    args = parser.parse_args(argv)
    RECIPE["epochs"] = args.epochs
    RECIPE["warmup_epochs"] = min(RECIPE["warmup_epochs"], args.epochs // 2)  # a quick check's shorter run
    cache = Path(os.environ.get("FOOD101HF_CACHE") or Path.home() / ".cache" / "food101hf")
    data = digits_folder(cache / "digits-v1")
    bf16 = native_bf16()
    work = args.keep or Path(tempfile.mkdtemp(prefix="food101hf-vs-timm-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    timm_env = {**env, "PYTHONPATH": str(args.timm.resolve())}  # the clone's timm, not the installed one
    print(f"{data}: {sum(1 for _ in data.glob('train/*/*.png'))} train / "
          f"{sum(1 for _ in data.glob('validation/*/*.png'))} validation images; {RECIPE}; "
          f"{'bf16' if bf16 else 'fp32'}; load average before: {os.getloadavg()[0]:.2f}", flush=True)
    commands = {"ours": lambda out: ours(data, out, bf16),
                "ours, accelerate": lambda out: ours(data, out, bf16, launcher=True),
                "timm": lambda out: theirs(args.timm, data, out, bf16)}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for round_ in range(args.rounds):
        names = list(commands)
        for name in names[round_ % 3:] + names[:round_ % 3]:  # each goes first in turn
            out = work / f"{name.replace(', ', '-')}-{round_}"
            seconds = run(commands[name](out), timm_env if name == "timm" else env, out.with_suffix(".log"))
            results[name].append((seconds, top1(name, out)))
            print(f"round {round_ + 1}: {name:>16} {seconds:6.1f} s, top-1 {results[name][-1][1]:.4f}, "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
    for name in ("ours", "ours, accelerate"):
        ratios = [a[0] / b[0] for a, b in zip(results[name], results["timm"])]
        print(f"whole process, {name} / timm's train.py: {statistics.median(ratios):.2f} "
              f"(rounds: {', '.join(f'{r:.2f}' for r in ratios)})  target <= 1.00")
    for name, values in results.items():
        print(f"{name:>16}: {statistics.median(s for s, _ in values):.1f} s, top-1 "
              f"{', '.join(f'{t:.4f}' for _, t in values)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
