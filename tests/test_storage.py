"""Full and read-only disks: the check before a run, and writes that fail (checkpoint, export, report, the card a
push writes) leave no temporary folder and end in one line. On a real small tmpfs when this process may mount one
(root), else a stub that raises ENOSPC inside the writer."""

import errno
import json
import subprocess
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from conftest import CLASSES, export_model_folder, run_script
from test_publish import hub  # noqa: F401  the test Hub fixture
from food101hf import storage
from food101hf.checkpoint import (LATEST, CheckpointError, Progress, checkpoint_root, complete_checkpoints,
                                  find_checkpoint, load_checkpoint, run_signature, save_checkpoint)
from food101hf.config import TrainConfig
from food101hf.storage import StorageError, check_output_dir, estimated_sizes, staged_writes

SIGNATURE = run_signature(TrainConfig(), ["a", "b"], 1, {"train": {"images": 8, "fingerprint": "t"}})
TINY = ["--no-pretrained", "--image-size", "32", "--batch-size", "4", "--warmup-epochs", "0.5"]


def mount_tmpfs(folder: Path, size: str, *options: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join([f"size={size}", *options]), "tmpfs",
                             str(folder)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.strip() or result.returncode}): the ENOSPC stub "
                    f"tests cover the same code")
    return folder


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB filesystem (a tmpfs), unmounted afterwards."""
    disk = mount_tmpfs(tmp_path / "disk", "2m")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def fill(folder: Path) -> Path:
    """Fill the filesystem of `folder` to the last byte."""
    filler = folder / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 65536)
        except OSError as e:
            assert e.errno == errno.ENOSPC
    return filler


@pytest.fixture
def accelerator():
    AcceleratorState._reset_state(True)
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    yield accelerator
    AcceleratorState._reset_state(True)


def test_the_estimate_counts_the_state_dict_and_two_adamw_slots_per_parameter():
    checkpoint, export = estimated_sizes("resnet18", num_classes=101)
    params = 11_228_325  # timm resnet18 with a 101-class head: 11,176,512 + 512 x 101 + 101
    assert export - storage.SMALL_FILES > 4 * params  # + BatchNorm running statistics
    assert checkpoint - export == 2 * 4 * params


def test_a_full_disk_is_refused_before_any_work_naming_folder_needed_and_free(small_disk):
    with pytest.raises(StorageError, match=rf"not enough space in {small_disk}: a resnet18 run needs about "
                                           rf"\d+\.\d MB \(export .* \+ one checkpoint .*\), \d\.\d MB free"):
        check_output_dir(small_disk, "resnet18")


def test_a_read_only_folder_is_refused_in_one_line(tmp_path):
    disk = mount_tmpfs(tmp_path / "ro", "1m", "ro")
    try:
        with pytest.raises(StorageError, match=r"cannot write to the output folder .*: Read-only file system"):
            check_output_dir(disk / "run", "resnet18")
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def assert_failed_cleanly(error: str, root: Path, intact: Path) -> None:
    assert "could not write checkpoint" in error and "temporary folder was removed" in error
    assert f"The checkpoint {intact} is intact" in error and "--resume auto" in error
    assert "\n" not in error
    assert not [p for p in root.iterdir() if p.name.startswith(".")]  # no temporary folder, no half pointer
    assert complete_checkpoints(root) == [intact] and (root / LATEST).read_text() == intact.name


def test_a_checkpoint_that_no_longer_fits_leaves_the_previous_one_and_resumes(accelerator, small_disk):
    root = small_disk / "checkpoints"
    first = save_checkpoint(accelerator, root, Progress(SIGNATURE, num_updates=3), keep=2)
    filler = fill(small_disk)
    with pytest.raises(CheckpointError) as failed:
        save_checkpoint(accelerator, root, Progress(SIGNATURE, num_updates=6), keep=2)
    assert_failed_cleanly(str(failed.value), root, first)
    assert "No space left on device" in str(failed.value) or "the disk is full" in str(failed.value)
    filler.unlink()  # space freed: resuming works
    assert load_checkpoint(accelerator, find_checkpoint("auto", root), SIGNATURE).num_updates == 3


def test_enospc_inside_the_serializer_stub(accelerator, tmp_path, monkeypatch):
    """Where no tmpfs can be mounted: torch's writer fails as it does on a full disk, and so does a write test."""
    root = tmp_path / "checkpoints"
    first = save_checkpoint(accelerator, root, Progress(SIGNATURE, num_updates=3), keep=2)

    def full_disk_save_state(folder):
        (Path(folder) / "optimizer.bin").write_bytes(b"\0" * 1000)  # half-written
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1000 vs 998")

    def full_disk_probe(folder, size=0):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(accelerator, "save_state", full_disk_save_state)
    monkeypatch.setattr(storage, "_probe", full_disk_probe)
    with pytest.raises(CheckpointError) as failed:
        save_checkpoint(accelerator, root, Progress(SIGNATURE, num_updates=6), keep=2)
    assert_failed_cleanly(str(failed.value), root, first)
    assert f"could not write checkpoint {root / 'update-00000006' / 'optimizer.bin'}: No space left" in \
        str(failed.value)


def test_an_error_that_is_not_the_disk_is_not_disguised(accelerator, tmp_path, monkeypatch):
    def buggy_save_state(folder):
        raise RuntimeError("a bug")

    monkeypatch.setattr(accelerator, "save_state", buggy_save_state)
    with pytest.raises(RuntimeError, match="a bug"):
        save_checkpoint(accelerator, tmp_path, Progress(SIGNATURE, num_updates=6), keep=2)
    assert not list(tmp_path.glob(".tmp-*"))


def test_staged_writes_keep_the_old_files_and_no_partial_one_on_a_full_disk(small_disk):
    (small_disk / "metrics.json").write_text("old")
    filler = fill(small_disk)
    with pytest.raises(StorageError, match=rf"could not write {small_disk}/metrics.json: No space left on device; "
                                           rf"nothing partial was kept\. Free space"):
        with staged_writes(small_disk, "Free space.") as stage:
            (stage / "metrics.json").write_text("new" * 100_000)
    assert (small_disk / "metrics.json").read_text() == "old"
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler", "metrics.json"]
    filler.unlink()
    with staged_writes(small_disk, "Free space.") as stage:
        (stage / "metrics.json").write_text("new")
    assert (small_disk / "metrics.json").read_text() == "new" and len(list(small_disk.iterdir())) == 1


def test_a_push_that_cannot_write_its_card_is_one_line(hub, tmp_path, monkeypatch):
    from food101hf import publish as hub_module

    folder = export_model_folder(tmp_path / "model", CLASSES)
    card = (folder / "README.md").read_text()
    from huggingface_hub import ModelCard

    save = ModelCard.save

    def full_disk_in_folder(self, path):  # the push's own staging (outside the folder) still works
        if not Path(path).is_relative_to(folder):
            return save(self, path)
        Path(path).write_text("partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(ModelCard, "save", full_disk_in_folder)
    with pytest.raises(hub_module.HubError, match=r"could not write .*README.md: .*The push to org/name succeeded"):
        hub_module.push_folder(folder, "org/name")
    assert "org/name" in hub.repos  # pushed
    assert (folder / "README.md").read_text() == card
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]


@pytest.mark.slow
def test_train_refuses_a_disk_without_room_before_loading_anything(image_folder, tmp_path):
    disk = mount_tmpfs(tmp_path / "disk", "50m")
    try:
        result = run_script("train.py", "--dataset", str(image_folder), *TINY, "--output-dir", str(disk / "run"))
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: not enough space in {disk / 'run'}: a resnet18.a1_in1k run needs about" in result.stderr
    assert "train images" not in result.stderr  # refused before the dataset was loaded


@pytest.mark.slow
def test_train_on_a_disk_that_fills_up_keeps_its_last_checkpoint_and_resumes(image_folder, tmp_path):
    # ResNet-18 at 3 classes: one checkpoint is 133 MB. 250 MiB (262 MB) pass the check before the run (estimated
    # export + one checkpoint: 221 MB) and hold the first checkpoint, not the second (keep 2).
    disk = mount_tmpfs(tmp_path / "disk", "250m")
    out = disk / "run"
    args = ["train.py", "--dataset", str(image_folder), *TINY, "--epochs", "2", "--num-workers", "0",
            "--output-dir", str(out)]
    try:
        failed = run_script(*args)
        assert failed.returncode == 2, failed.stderr
        assert "Traceback" not in failed.stderr
        error = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert len(error) == 1 and "could not write checkpoint" in error[0], failed.stderr
        first = checkpoint_root(out) / "update-00000006"
        assert f"The checkpoint {first} is intact" in error[0] and "--resume auto" in error[0]
        assert not list(checkpoint_root(out).glob(".tmp-*"))
        assert json.loads((first / "progress.json").read_text())["epoch"] == 1

        subprocess.run(["mount", "-o", "remount,size=600m", str(disk)], check=True)  # space freed
        resumed = run_script(*args, "--resume", "auto")
        assert resumed.returncode == 0, resumed.stderr
        assert "resumed from" in resumed.stderr and (out / "model.safetensors").is_file()
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def test_an_export_that_does_not_fit_keeps_nothing_partial_and_says_how_to_resume(small_disk, accelerator):
    save_checkpoint(accelerator, checkpoint_root(small_disk), Progress(SIGNATURE, num_updates=6), keep=1)
    with pytest.raises(StorageError) as failed:
        export_model_folder(small_disk, CLASSES)  # a 45 MB ResNet-18 export into a 2 MB filesystem
    message = str(failed.value)
    assert message.startswith(f"could not write model.safetensors, config.json and metrics.json into {small_disk}: "
                              f"No space left on device; nothing partial was kept.")
    assert f"The checkpoint {checkpoint_root(small_disk) / 'update-00000006'} is intact" in message
    assert "--resume auto" in message and "\n" not in message
    assert sorted(p.name for p in small_disk.iterdir()) == ["train_config.yaml"]
