import json

import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from food101hf.checkpoint import (LATEST, CheckpointError, Progress, complete_checkpoints, find_checkpoint,
                                  load_checkpoint, run_signature, save_checkpoint)
from food101hf.config import TrainConfig


@pytest.fixture
def run():
    AcceleratorState._reset_state(True)
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)
    yield accelerator, model
    AcceleratorState._reset_state(True)


DATA = {"train": {"images": 32, "fingerprint": "a1"}, "eval": {"images": 9, "fingerprint": "e1"}}
SIGNATURE = run_signature(TrainConfig(), ["a", "b"], 1, DATA)


def test_checkpoints_are_renamed_into_place_and_pruned_after_the_new_one_is_complete(run, tmp_path):
    accelerator, _ = run
    for update in (2, 4, 6):
        save_checkpoint(accelerator, tmp_path, Progress(SIGNATURE, num_updates=update), keep=2)
    assert [p.name for p in complete_checkpoints(tmp_path)] == ["update-00000004", "update-00000006"]
    assert (tmp_path / LATEST).read_text() == "update-00000006"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left behind


def test_auto_resume_ignores_half_written_checkpoints_and_a_stale_pointer(run, tmp_path):
    accelerator, _ = run
    assert find_checkpoint("auto", tmp_path) is None  # nothing yet: start fresh
    save_checkpoint(accelerator, tmp_path, Progress(SIGNATURE, num_updates=3), keep=2)
    (tmp_path / ".tmp-update-00000009").mkdir()  # a save killed half-way
    assert find_checkpoint("auto", tmp_path).name == "update-00000003"
    (tmp_path / LATEST).write_text("update-00000099")  # points at a checkpoint that is gone
    assert find_checkpoint("auto", tmp_path).name == "update-00000003"


def test_resume_restores_weights_and_progress(run, tmp_path):
    accelerator, model = run
    progress = Progress(SIGNATURE, epoch=1, batches_done=4, num_updates=10, history=[{"top1": 0.5}])
    path = save_checkpoint(accelerator, tmp_path, progress, keep=1)
    saved = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1)
    restored = load_checkpoint(accelerator, path, SIGNATURE)
    assert restored == progress
    assert torch.equal(model.weight, saved)
    assert json.loads((path / "progress.json").read_text())["batches_done"] == 4


def test_a_checkpoint_of_another_run_is_refused_naming_the_differences(run, tmp_path):
    accelerator, _ = run
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


def test_a_checkpoint_of_other_data_is_refused_naming_the_split_sizes_and_fingerprints(run, tmp_path):
    accelerator, _ = run
    path = save_checkpoint(accelerator, tmp_path, Progress(SIGNATURE, num_updates=1), keep=1)
    fewer = {"train": {"images": 24, "fingerprint": "a2"}, "eval": DATA["eval"]}
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(accelerator, path, run_signature(TrainConfig(), ["a", "b"], 1, fewer))
    assert str(error.value) == (f"{path} comes from other data (train split: checkpoint 32 images (fingerprint a1), "
                                f"now 24 (fingerprint a2)). Resume with the same settings and data, or use another "
                                f"--output-dir to start afresh")
