"""A resumed or continued run is the same run: its data is part of its identity, a recorded local dataset stays
local wherever it is read from, and the end of a run says what to run next, ready to paste. End-to-end: slow."""

import hashlib
import json
import os
import shlex
import subprocess
import sys

import pytest
import yaml

from conftest import ROOT, run_script
from food101hf.checkpoint import checkpoint_root

pytestmark = pytest.mark.slow

TINY = ["--no-pretrained", "--image-size", "32", "--batch-size", "4", "--num-workers", "0", "--freeze", "none",
        "--warmup-epochs", "0.5"]


def snapshot(folder):
    return {p.relative_to(folder): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_resume_against_other_data_is_refused_naming_what_changed(image_folder, tmp_path):
    out = tmp_path / "run"
    args = ["train.py", "--dataset", str(image_folder), *TINY, "--epochs", "2", "--output-dir", str(out)]
    first = run_script(*args, "--epochs", "1")
    assert first.returncode == 0, first.stderr
    fingerprint = json.loads((checkpoint_root(out) / "update-00000006" / "progress.json").read_text())[
        "signature"]["data"]["train"]["fingerprint"]
    for photo in sorted((image_folder / "train" / "beignets").glob("*.jpg"))[:4]:
        photo.unlink()  # 24 -> 20 training photos
    before = snapshot(out)
    result = run_script(*args, "--epochs", "1", "--resume", "auto")
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    message = next(line for line in result.stderr.splitlines() if line.startswith("error: "))
    assert message.startswith(f"error: {checkpoint_root(out) / 'update-00000006'} comes from other data (train split: "
                              f"checkpoint 24 images (fingerprint {fingerprint}), now 20 (fingerprint ")
    assert message.endswith("). Resume with the same settings and data, or use another --output-dir to start afresh")
    assert snapshot(out) == before  # nothing written or changed


def test_a_relative_local_dataset_stays_local_from_another_directory(image_folder, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    image_folder.rename(photos / "food")
    out = tmp_path / "run"
    trained = subprocess.run([sys.executable, str(ROOT / "train.py"), "--dataset", "photos/food", *TINY,
                              "--epochs", "1", "--output-dir", str(out)], cwd=tmp_path, capture_output=True,
                             text=True, timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert trained.returncode == 0, trained.stderr
    recorded = yaml.safe_load((out / "train_config.yaml").read_text())["dataset"]
    assert recorded == str(photos / "food")  # absolute: the same folder from anywhere
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
    assert yaml.safe_load((tmp_path / "run-48" / "train_config.yaml").read_text())["dataset"] == str(photos / "food")
    assert json.loads((tmp_path / "run-48" / "metrics.json").read_text())["image_size"] == 48
    assert "datasets:" not in (tmp_path / "run-48" / "README.md").read_text()


def test_the_noise_a_person_does_not_read_is_gone(image_folder, tmp_path):
    result = run_script("train.py", "--dataset", str(image_folder), *TINY, "--epochs", "1", "--output-dir",
                        str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "[RANK 0]" not in result.stderr and "Downloading data" not in result.stderr
