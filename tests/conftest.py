"""Shared fixtures: tiny generated image folders, a runner for the real scripts and the train.py runs the session
shares (`trained`), a stand-in Hub, CPU Accelerators. Nothing touches the network."""

import functools
import hashlib
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
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


def jpeg(colour, seed: int) -> bytes:
    """A 48x40 JPEG of `colour` with noise, as bytes (what a Hub dataset's parquet holds)."""
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.array(colour) + rng.normal(0, 20, (40, 48, 3)), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def parquet(dataset) -> bytes:
    """A `datasets.Dataset` as one parquet shard, as the Hub serves a dataset's data files."""
    buffer = io.BytesIO()
    dataset.to_parquet(buffer)
    return buffer.getvalue()


def pytest_collection_modifyitems(items):
    """Longest first, so that pytest-xdist's two workers (setup.cfg) finish together: the tests that share a
    session's train.py run (one xdist_group each, kept on one worker), then the other slow ones, then the rest, each
    in file order. Without it the shared runs' group came last and one worker ran alone for its last 5 minutes."""
    items.sort(key=lambda item: 0 if item.get_closest_marker("xdist_group") else
               1 if item.get_closest_marker("slow") else 2)
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
# train.py's smallest run, as most end-to-end tests start it: random weights (nothing to download), 32 px, batch 4
# (the image_folder's 24 training images: 6 updates an epoch), half an epoch of warmup. Each test adds what it
# varies (--epochs, --num-workers, --freeze, checkpoints) explicitly.
TINY = ["--no-pretrained", "--image-size", "32", "--batch-size", "4", "--warmup-epochs", "0.5"]
# The run the session shares (trained(*FROM_SCRATCH)) among the tests that only read a run's folder or log: every
# layer trained from scratch for 2 epochs, no loader workers
FROM_SCRATCH = [*TINY, "--freeze", "none", "--epochs", "2", "--num-workers", "0"]
# A run to stop or kill mid-epoch and resume (test_preemption, test_reliability, test_requeue: trained(*CHECKPOINTED)
# is the uninterrupted run they compare with): 2 epochs of 6 updates, a loader worker (which a signal to the process
# group reaches too), a checkpoint every 2 updates (so the first one falls mid-epoch), all kept
CHECKPOINTED = [*TINY, "--epochs", "2", "--num-workers", "1", "--checkpoint-every", "2", "--keep-checkpoints", "5"]
# polish.py's smallest: batch 4 in-process, BatchNorm re-estimated on 2 batches
TINY_POLISH = ["--batch-size", "4", "--num-workers", "0", "--bn-batches", "2"]
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


@pytest.fixture(scope="session")
def food(tmp_path_factory) -> Path:
    """An image folder like image_folder's (24 training and 9 validation images, 3 classes), for the session's
    trained runs: read only."""
    root = tmp_path_factory.mktemp("food")
    write_image_folder(root / "train", CLASSES, per_class=8)
    write_image_folder(root / "validation", CLASSES, per_class=3, seed=1)
    return root


@dataclass
class Run:
    """A train.py run that finished: its command (`train.py --dataset ... FLAGS`, without --output-dir), its output
    folder and its process (stdout, stderr)."""

    args: list[str]
    out: Path
    result: subprocess.CompletedProcess

    @property
    def dataset(self) -> Path:
        return Path(self.args[self.args.index("--dataset") + 1])


@pytest.fixture(scope="session")
def trained(tmp_path_factory, food):
    """trained(*flags, launcher=()) -> Run of `train.py --dataset FOOD *flags`, started by launcher (python's
    arguments before the script: torch.distributed.run's), run to its end once a session for each command: for
    the tests that read what a run wrote, or stop, kill or resume the same command and compare. A test that
    changes a run's folders works on a copy."""
    runs = {}

    def train(*flags: str, launcher: tuple[str, ...] = ()) -> Run:
        if (launcher, flags) not in runs:
            args = ["train.py", "--dataset", str(food), *flags]
            out = tmp_path_factory.mktemp("trained") / "run"
            result = run_script(*launcher, *args, "--output-dir", str(out), timeout=600)
            assert result.returncode == 0, result.stderr
            runs[launcher, flags] = Run(args, out, result)
        return runs[launcher, flags]

    return train


def run_script(*args: str, timeout: int = 300, env: dict | None = None,
               cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run a project script as a user would, offline, from the repository root or `cwd` (which then needs the
    script's full path; the package comes from this checkout either way)."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=full_env, capture_output=True, text=True,
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


def comparable(metrics: dict) -> dict:
    """A metrics.json without its timings, which differ between two runs that compute the same."""
    return {k: v for k, v in metrics.items() if k not in ("train_images_per_second", "train_seconds")}


def free_port() -> int:
    """A TCP port nothing listens on now, for a server a test starts."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 300) -> bool:
    """Wait until something accepts connections on 127.0.0.1:port; False if the process ended or time ran out. A
    Gradio server (gradio, torch, a model) starts in seconds on a quiet machine, in minutes on a busy 2-core one:
    `python -m food101hf.app` took 132 s there just to refuse a missing model."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.5)
    return False


@pytest.fixture
def make_accelerator():
    """Accelerator(cpu=True, **kwargs) of a test's own: Accelerate's state is a process-wide singleton, reset
    before and after."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(True)
    yield lambda **kwargs: Accelerator(cpu=True, **kwargs)
    AcceleratorState._reset_state(True)


@pytest.fixture
def accelerator(make_accelerator):
    """A plain CPU Accelerator."""
    return make_accelerator()


@pytest.fixture
def checkpointable(accelerator):
    """(accelerator, model): a CPU Accelerator with a Linear(3, 2) and its SGD optimizer prepared, so that
    save_checkpoint and load_checkpoint have weights and optimizer state to write and restore."""
    import torch

    model = torch.nn.Linear(3, 2)
    model, _ = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    return accelerator, model


# --- a stand-in Hub (tests/hub_server.py) that the in-process huggingface_hub client talks to ---------------------

HUB_TOKEN = "hf_test_0123456789abcdef"


def point_client_at(monkeypatch, url: str) -> None:
    """huggingface_hub read HF_ENDPOINT, HF_HUB_OFFLINE and HF_HUB_DISABLE_XET at import: patch where it keeps them
    (the constants, the URL template, and the module-level HfApi behind create_repo/upload_folder/...)."""
    from huggingface_hub import constants, hf_api
    from transformers.utils import hub as transformers_hub

    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(hf_api.api, "endpoint", url)
    monkeypatch.setattr(transformers_hub, "_hf_api", None)  # transformers keeps an HfApi made at its first use
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True)  # plain LFS uploads and HTTP downloads
    monkeypatch.setenv("HF_TOKEN", HUB_TOKEN)


@pytest.fixture
def hub(monkeypatch):
    """tests/hub_server.py on 127.0.0.1, this process's huggingface_hub pointed at it with HUB_TOKEN."""
    from hub_server import HubServer

    with HubServer(token=HUB_TOKEN) as server:
        point_client_at(monkeypatch, server.url)
        yield server


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
    # as score_logits reports 3 classes: no top-5; the interval is Wilson's for 4.5 of 9
    metrics = {"top1": 0.5, "top1_ci95": [0.2265, 0.7735], "eval_loss": 1.0, "num_eval_samples": 9,
               "eval_split": "validation"}
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
