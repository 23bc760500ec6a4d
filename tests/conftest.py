"""Shared fixtures: tiny generated image folders and a runner for the real scripts. Nothing touches the network."""

import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# A private Hugging Face home, so tests neither read nor fill the user's caches; set before any HF import.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="food101hf-tests-hf-")
os.environ["FOOD101HF_CACHE"] = tempfile.mkdtemp(prefix="food101hf-tests-cache-")

ROOT = Path(__file__).resolve().parents[1]
COLOURS = [(200, 40, 40), (40, 160, 60), (50, 70, 200), (220, 200, 60)]


def write_image_folder(root: Path, classes: list[str], per_class: int, size=(40, 32), seed=0) -> Path:
    """root/<class>/<i>.jpg: each class a distinct colour with noise, so a tiny model can tell them apart."""
    rng = np.random.default_rng(seed)
    for index, name in enumerate(classes):
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = np.clip(np.array(COLOURS[index % len(COLOURS)]) + rng.normal(0, 25, (size[1], size[0], 3)),
                             0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.jpg", quality=90)
    return root


@functools.cache
def _smooth(size: tuple[int, int], seed: int) -> Image.Image:
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.BICUBIC)


def smooth_photo(path: Path, size=(4032, 3024), seed=0, **save_options) -> Path:
    """A JPEG of smooth colour (a few bicubic-enlarged random pixels), so that reduced and whole decodes of it agree
    within a few grey levels; 4032 x 3024 by default, the size of a 12 MP phone photo."""
    _smooth(tuple(size), seed).save(path, quality=90, **save_options)
    return path


CLASSES = ["beignets", "crème brûlée", "fish and chips"]  # spaces and non-ASCII on purpose
FOOD101 = (Path(__file__).parent / "data" / "food101_classes.txt").read_text().split()
# resnet18.a1_in1k's pretrained_cfg (timm's resolve_model_data_config), for transforms built without a model
DATA_CONFIG = {"interpolation": "bicubic", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
               "crop_pct": 0.95}


@pytest.fixture
def image_folder(tmp_path) -> Path:
    """train/ and validation/ splits, 3 classes."""
    write_image_folder(tmp_path / "food" / "train", CLASSES, per_class=8)
    write_image_folder(tmp_path / "food" / "validation", CLASSES, per_class=3, seed=1)
    return tmp_path / "food"


def run_script(*args: str, timeout: int = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a project script as a user would, offline; fail with its output if it fails."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=ROOT, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def start_script(command: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start a command as a user would, offline, in a session of its own (so that it can be signalled as a group),
    its stderr appended to log."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.Popen(command, cwd=ROOT, env=full_env, stdout=subprocess.DEVNULL, stderr=log.open("a"),
                            start_new_session=True)


def wait_for(path: Path, process: subprocess.Popen, timeout: float = 240) -> None:
    """Wait until path exists; fail if the process ended first."""
    deadline = time.monotonic() + timeout
    while not path.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    assert process.poll() is None, "the run ended before it could be signalled"


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def plant_bad_files(folder: Path) -> list[str]:
    """Files a real photo folder ends up with; each must be named and skipped, never crash a run."""
    good = next(folder.glob("*.jpg")).read_bytes()
    (folder / "empty.jpg").write_bytes(b"")
    (folder / "truncated.jpg").write_bytes(good[: len(good) // 2])
    (folder / "notes.jpg").write_text("not an image")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 64)
    # 15000 x 15000 = 225 M pixels: over Pillow's hard limit (2 x 89 M), yet a few KB as a 1-bit PNG
    Image.new("1", (15000, 15000)).save(folder / "bomb.png")
    return ["empty.jpg", "truncated.jpg", "notes.jpg", "corrupt.png", "bomb.png"]


def plant_odd_images(folder: Path, colour=(200, 40, 40)) -> list[str]:
    """Valid images in every awkward form; each must be used."""
    base = Image.new("RGB", (48, 40), colour)
    base.convert("L").save(folder / "grey.png")
    base.convert("CMYK").save(folder / "cmyk.jpg")
    base.convert("P").save(folder / "palette.png", transparency=0)
    base.convert("RGBA").save(folder / "alpha.png")
    Image.fromarray(np.full((40, 48), 40000, dtype=np.uint16)).save(folder / "sixteen_bit.png")
    base.resize((320, 40)).save(folder / "panorama.jpg")  # 1:8, a phone panorama; 1:10 is the limit
    exif = base.getexif()
    exif[0x0112] = 6
    base.save(folder / "rotated.jpg", exif=exif)
    return ["grey.png", "cmyk.jpg", "palette.png", "alpha.png", "sixteen_bit.png", "panorama.jpg", "rotated.jpg"]


def export_model_folder(out: Path, classes: list[str], image_size: int = 32, dataset: str = "ethz/food101",
                        seed: int = 0) -> Path:
    """An output folder as train.py writes it, from a random-weight ResNet-18, in about a second."""
    import timm
    import torch

    from food101hf.config import TrainConfig
    from food101hf.outputs import save_config
    from food101hf.publish import write_outputs

    out.mkdir(parents=True, exist_ok=True)
    save_config(TrainConfig(dataset=dataset, pretrained=False, image_size=image_size), out / "train_config.yaml")
    torch.manual_seed(seed)
    model = timm.create_model("resnet18", num_classes=len(classes)).eval()
    metrics = {"top1": 0.5, "top5": 1.0, "eval_loss": 1.0, "num_eval_samples": 9, "eval_split": "validation"}
    write_outputs(out, model, classes, timm.data.resolve_model_data_config(model), image_size, metrics)
    return out


def weighted_accuracy(rows) -> float:
    """The support-weighted mean of per-class accuracies (a report's per_class rows), which must equal top-1."""
    return sum(row["accuracy"] * row["support"] for row in rows if row["support"]) / sum(r["support"] for r in rows)


def plant_audit_folder(root) -> list[str]:
    """A folder with bad files, a non-image, duplicates within a split, across splits and across labels; returns
    the bad files' names."""
    write_image_folder(root / "train", ["a", "b"], per_class=3, size=(30, 20))
    write_image_folder(root / "validation", ["a", "b"], per_class=2, size=(30, 20), seed=1)
    bad = plant_bad_files(root / "train" / "a")
    (root / "train" / "b" / "notes.txt").write_text("not named like an image: imagefolder skips it too")
    shutil.copy(root / "train" / "a" / "1.jpg", root / "train" / "b" / "copy.jpg")  # same split, other label
    shutil.copy(root / "train" / "a" / "2.jpg", root / "validation" / "a" / "leak.jpg")  # across splits
    Image.new("L", (12, 10)).save(root / "train" / "b" / "grey.png")
    return [f"a/{name}" for name in bad]
