"""A resumed or continued run is the same run: its data, by content, is part of its identity, a recorded local
dataset stays local wherever it is read from, and the end of a run says what to run next, ready to paste.
End-to-end: slow."""

import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys

import pytest
import yaml

from conftest import FROM_SCRATCH, ROOT, TINY, run_script
from food101hf.checkpoint import checkpoint_root

pytestmark = pytest.mark.slow

ONE_EPOCH = [*TINY, "--freeze", "none", "--num-workers", "0", "--epochs", "1"]


def snapshot(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_follows_the_data_not_its_place(image_folder, tmp_path):
    """A cluster job stages its data to per-job scratch space: the same photos at another path, with new
    modification times, resume; other photos are refused, naming the split; a checkpoint written before the data
    was identified by content still resumes where nothing changed."""
    out = tmp_path / "run"
    first = run_script("train.py", "--dataset", str(image_folder), *TINY, "--epochs", "1", "--output-dir", str(out))
    assert first.returncode == 0, first.stderr
    progress_file = checkpoint_root(out) / "update-00000006" / "progress.json"
    progress = json.loads(progress_file.read_text())

    staged = shutil.copytree(image_folder, tmp_path / "job-1002" / "data", copy_function=shutil.copyfile)
    args = ["train.py", "--dataset", str(staged), *TINY, "--epochs", "1", "--output-dir", str(out), "--resume", "auto"]
    resumed = run_script(*args)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr

    for photo in sorted((staged / "train" / "beignets").glob("*.jpg"))[:4]:
        photo.unlink()  # 24 -> 20 training photos
    before = snapshot(out)
    refused = run_script(*args)
    assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
    message = next(line for line in refused.stderr.splitlines() if line.startswith("error: "))
    content = progress["signature"]["data"]["train"]["content"]
    assert message.startswith(f"error: {progress_file.parent} comes from other data (train split: checkpoint 24 "
                              f"images (content {content}), now 20 (content ")
    assert message.endswith("). Resume with the same settings and data, or use another --output-dir to start afresh")
    assert snapshot(out) == before  # nothing written or changed

    # progress.json as food101hf wrote it before: the absolute dataset path, each split's size and datasets'
    # fingerprint only (which hashes absolute paths and modification times): it resumes in place
    data = progress["signature"]["data"]
    old = progress | {"signature": progress["signature"] | {"data": {split: {k: v for k, v in found.items()
                                                                             if k != "content"}
                                                                     for split, found in data.items()}}}
    assert old["signature"]["dataset"] == str(image_folder)
    progress_file.write_text(json.dumps(old, indent=2))
    in_place = run_script(*[str(image_folder) if a == str(staged) else a for a in args])
    assert in_place.returncode == 0, in_place.stderr
    assert "resumed from" in in_place.stderr


def test_a_relative_local_dataset_stays_local_from_another_directory(image_folder, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    image_folder.rename(photos / "food")
    out = tmp_path / "run"
    trained = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dataset", "photos/food", *ONE_EPOCH,
                              "--output-dir", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert trained.returncode == 0, trained.stderr
    recorded = yaml.safe_load((out / "train_config.yaml").read_text())["dataset"]
    assert recorded == {"path": "../photos/food"}  # relative to the recipe's own folder: no path of this machine
    assert "datasets:" not in (out / "README.md").read_text()  # a local folder is never declared a Hub dataset

    # the end of the run says what to run next; its predict command works as pasted, on an eval photo
    predict = next(line for line in trained.stdout.splitlines() if "python -m food101hf.predict" in line)
    command = shlex.split(predict.split("#")[0])
    assert command[:4] == ["python", "-m", "food101hf.predict", "--model"] and command[4] == str(out)
    assert command[5].startswith(str(photos / "food" / "validation"))
    answered = run_script(*command[1:])
    assert answered.returncode == 0 and json.loads(answered.stdout)["file"] == command[5]
    # ... and so does its polish command (started as this run was, with its batch size, at 32 x 224/192 -> 48 px),
    # run as pasted from another directory (the repo root): it reads the recorded folder, not a Hub id
    polish = next(line for line in trained.stdout.splitlines() if "polish.py" in line)
    command = shlex.split(polish.split("#")[0])
    assert command == ["python", str(ROOT / "polish.py"), "--init", str(out), "--batch-size", "4"], polish
    polished = run_script(*command[1:])
    assert polished.returncode == 0, polished.stderr
    for recipe in ("train_config.yaml", "base_config.yaml"):
        assert yaml.safe_load((tmp_path / "run-48" / recipe).read_text())["dataset"] == {"path": "../photos/food"}
    assert json.loads((tmp_path / "run-48" / "metrics.json").read_text())["image_size"] == 48
    assert "datasets:" not in (tmp_path / "run-48" / "README.md").read_text()


@pytest.mark.xdist_group("from_scratch")  # conftest.trained(*FROM_SCRATCH): one run on one worker
def test_the_noise_a_person_does_not_read_is_gone(trained):
    result = trained(*FROM_SCRATCH).result
    assert "[RANK 0]" not in result.stderr and "Downloading data" not in result.stderr
