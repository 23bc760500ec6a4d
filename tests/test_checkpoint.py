import dataclasses
import json

import pytest
import torch

from food101hf.checkpoint import (LATEST, CheckpointError, Progress, check_resume, complete_checkpoints,
                                  find_checkpoint, load_checkpoint, run_signature, save_checkpoint)
from food101hf.config import TrainConfig


DATA = {"train": {"images": 32, "fingerprint": "a1"}, "eval": {"images": 9, "fingerprint": "e1"}}
SIGNATURE = run_signature(TrainConfig(), ["a", "b"], 1, DATA)


def test_checkpoints_are_renamed_into_place_and_pruned_after_the_new_one_is_complete(checkpointable, tmp_path):
    accelerator, _ = checkpointable
    for update in (2, 4, 6):
        save_checkpoint(accelerator, tmp_path, Progress(SIGNATURE, num_updates=update), keep=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["update-00000004", "update-00000006"]
    assert (tmp_path / LATEST).read_text() == "update-00000006"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_auto_resume_ignores_half_written_checkpoints_and_a_stale_pointer(checkpointable, tmp_path):
    accelerator, _ = checkpointable
    assert find_checkpoint("auto", tmp_path) is None  # nothing yet: start fresh
    save_checkpoint(accelerator, tmp_path, Progress(SIGNATURE, num_updates=3), keep=2)
    (tmp_path / ".tmp-update-00000009").mkdir()  # a save killed half-way
    assert find_checkpoint("auto", tmp_path).name == "update-00000003"
    (tmp_path / LATEST).write_text("update-00000099")  # points at a checkpoint that is gone
    assert find_checkpoint("auto", tmp_path).name == "update-00000003"


def test_resume_restores_weights_and_progress(checkpointable, tmp_path):
    accelerator, model = checkpointable
    progress = Progress(SIGNATURE, epoch=1, batches_done=4, num_updates=10, history=[{"top1": 0.5}])
    path = save_checkpoint(accelerator, tmp_path, progress, keep=1)
    saved = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1)
    restored = load_checkpoint(accelerator, path, SIGNATURE)
    assert restored == progress
    assert torch.equal(model.weight, saved)
    assert json.loads((path / "progress.json").read_text())["batches_done"] == 4


def test_a_checkpoint_of_another_run_is_refused_naming_the_differences(checkpointable, tmp_path):
    accelerator, _ = checkpointable
    path = save_checkpoint(accelerator, tmp_path, Progress(SIGNATURE, num_updates=1), keep=1)
    other = run_signature(TrainConfig(model="resnet34", image_size=224), ["a", "b"], 1, DATA)
    with pytest.raises(CheckpointError, match=r"image_size: checkpoint 192, now 224; model: checkpoint"):
        load_checkpoint(accelerator, path, other)


def test_operational_settings_may_change_on_resume():
    a = run_signature(TrainConfig(num_workers=8, output_dir="x", resume="auto"), ["a"], 1, DATA)
    assert a == run_signature(TrainConfig(), ["a"], 1, DATA)
    assert a != run_signature(TrainConfig(), ["a"], 2, DATA)  # the global batch, and so the schedule, would change


def test_resume_from_a_path_that_is_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        find_checkpoint(str(tmp_path), tmp_path)


def test_a_checkpoint_of_other_data_is_refused_naming_the_split_sizes_and_fingerprints(checkpointable, tmp_path):
    accelerator, _ = checkpointable
    path = save_checkpoint(accelerator, tmp_path, Progress(SIGNATURE, num_updates=1), keep=1)
    fewer = {"train": {"images": 24, "fingerprint": "a2"}, "eval": DATA["eval"]}
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(accelerator, path, run_signature(TrainConfig(), ["a", "b"], 1, fewer))
    assert str(error.value) == (f"{path} comes from other data (train split: checkpoint 32 images (fingerprint a1), "
                                f"now 24 (fingerprint a2)). Resume with the same settings and data, or use another "
                                f"--output-dir to start afresh")


def test_a_resume_with_other_settings_is_refused_from_progress_json_before_anything_loads(tmp_path):
    """train.py and polish.py call check_resume before any data or weights load (runs.check_run); it reads only the
    checkpoint's progress.json, so one written by hand stands for a run trained at 32 px."""
    checkpoint = tmp_path / "update-00000006"
    checkpoint.mkdir()
    trained = TrainConfig(dataset="food", image_size=32, num_workers=0)
    progress = Progress(run_signature(trained, ["a", "b"], 1, DATA), epoch=1, num_updates=6)
    (checkpoint / "progress.json").write_text(json.dumps(dataclasses.asdict(progress)))
    (tmp_path / LATEST).write_text(checkpoint.name)

    check_resume(TrainConfig(dataset="food", image_size=32, num_workers=2, resume="auto"), tmp_path, 1)  # same run
    check_resume(TrainConfig(dataset="food", image_size=48), tmp_path, 1)  # no --resume: nothing to compare
    with pytest.raises(CheckpointError) as error:
        check_resume(TrainConfig(dataset="food", image_size=48, num_workers=0, resume="auto"), tmp_path, 1)
    assert str(error.value).startswith(f"{checkpoint} comes from a different run (")
    assert "image_size: checkpoint 32, now 48" in str(error.value)
    with pytest.raises(CheckpointError, match="num_processes: checkpoint 1, now 2"):
        check_resume(TrainConfig(dataset="food", image_size=32, resume="auto"), tmp_path, 2)
