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


def content(train: str, images: int = 32) -> dict:
    """A data identity as this version records it: content, and datasets' location-bound fingerprint."""
    return {"train": {"images": images, "content": train, "fingerprint": f"where-{train}"},
            "eval": {"images": 9, "content": "e", "fingerprint": "where-e"}}


def test_a_local_dataset_that_moved_resumes_by_content_and_later_checkpoints_record_the_new_place(checkpointable,
                                                                                                tmp_path):
    accelerator, _ = checkpointable
    saved = run_signature(TrainConfig(dataset="/scratch/job-1001/data"), ["a", "b"], 1, content("c1"))
    path = save_checkpoint(accelerator, tmp_path, Progress(saved, num_updates=1), keep=1)
    moved = {**content("c1"), "train": {**content("c1")["train"], "fingerprint": "where-now"}}  # same photos
    now = run_signature(TrainConfig(dataset="/scratch/job-1002/data"), ["a", "b"], 1, moved)
    check_resume(TrainConfig(dataset="/scratch/job-1002/data", resume="auto"), tmp_path, 1)  # before data loads
    assert load_checkpoint(accelerator, path, now).signature == now
    for other in (content("c2"), content("c1", images=31)):  # other photos: refused, naming the split
        with pytest.raises(CheckpointError, match=r"comes from other data \(train split: checkpoint 32 images "
                                                  r"\(content c1\), now 3[12] \(content c[12]\)\)"):
            load_checkpoint(accelerator, path, run_signature(TrainConfig(dataset="/x"), ["a", "b"], 1, other))
    with pytest.raises(CheckpointError, match="dataset: checkpoint '/scratch/job-1001/data', now 'org/food'"):
        check_resume(TrainConfig(dataset="org/food", resume="auto"), tmp_path, 1)  # a folder is not a Hub id


def test_a_checkpoint_from_before_content_identity_still_resumes_where_nothing_changed(checkpointable, tmp_path):
    """progress.json of an earlier food101hf: the absolute dataset path, each split's size and datasets'
    fingerprint only, and the columns as its flags' defaults then were ('image', 'label'; now detected: None)."""
    accelerator, _ = checkpointable
    old = run_signature(TrainConfig(dataset="/home/me/food"), ["a", "b"], 1, DATA)
    old |= {"image_column": "image", "label_column": "label"}
    path = save_checkpoint(accelerator, tmp_path, Progress(old, num_updates=1), keep=1)
    check_resume(TrainConfig(dataset="/home/me/food", resume="auto"), tmp_path, 1)  # the columns are the data's
    assert "content" not in json.loads((path / "progress.json").read_text())["signature"]["data"]["train"]
    same = {split: found | {"content": "new"} for split, found in DATA.items()}
    now = run_signature(TrainConfig(dataset="/home/me/food"), ["a", "b"], 1, same)
    assert load_checkpoint(accelerator, path, now).signature == now
    edited = {**same, "train": {**same["train"], "fingerprint": "a2"}}
    with pytest.raises(CheckpointError, match=r"train split: checkpoint 32 images \(fingerprint a1\), now 32 "
                                              r"\(fingerprint a2\)"):
        load_checkpoint(accelerator, path, run_signature(TrainConfig(dataset="/home/me/food"), ["a", "b"], 1, edited))
