"""A run killed mid-epoch resumes bitwise identically; bad files never crash a run; two CPU processes count every
image once; nothing leaks the Hub token; the Hub failing is said at once. End-to-end, so marked slow."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import CLASSES, ROOT, plant_bad_files, plant_odd_images, run_script, smooth_photo

pytestmark = pytest.mark.slow

TINY = ["--no-pretrained", "--image-size", "32", "--batch-size", "4", "--warmup-epochs", "0.5"]
FAKE_TOKEN = "hf_fakeTokenThatMustNeverBeWritten"


def digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def comparable(metrics):
    return {k: v for k, v in metrics.items() if k not in ("train_images_per_second", "train_seconds")}  # timings


@pytest.mark.parametrize("data_path", [[], ["--decode-on-device"]], ids=["cpu-workers", "decode-on-device"])
def test_a_run_killed_mid_epoch_resumes_to_bitwise_identical_weights_and_metrics(data_path, image_folder, tmp_path):
    # larger photos the decode rule reduces (640 x 480: 1/4 for training at 32 px, 1/8 for evaluation) beside 40 x 32
    # ones it decodes whole; 27 images / batch 4 = 6 updates an epoch; a checkpoint every 4 updates falls mid-epoch
    for label in CLASSES:
        for split in ("train", "validation"):
            smooth_photo(image_folder / split / label / "large.jpg", (640, 480), seed=len(label))
    args = ["train.py", "--dataset", str(image_folder), *TINY, "--epochs", "2", "--num-workers", "1",
            "--checkpoint-every", "4", *data_path]
    assert run_script(*args, "--output-dir", str(tmp_path / "whole")).returncode == 0

    killed = tmp_path / "killed"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    process = subprocess.Popen([sys.executable, *args, "--output-dir", str(killed)], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    latest = tmp_path / "killed-checkpoints" / "latest"
    deadline = time.monotonic() + 240
    while not latest.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"

    resumed = run_script(*args, "--output-dir", str(killed), "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and "epoch 1, batch 4, update 4" in resumed.stderr
    assert digest(killed / "model.safetensors") == digest(tmp_path / "whole" / "model.safetensors")
    assert comparable(json.loads((killed / "metrics.json").read_text())) == \
        comparable(json.loads((tmp_path / "whole" / "metrics.json").read_text()))


def test_resume_refuses_a_checkpoint_of_another_run(image_folder, tmp_path):
    out = tmp_path / "run"
    assert run_script("train.py", "--dataset", str(image_folder), *TINY, "--epochs", "1", "--num-workers", "0",
                      "--output-dir", str(out)).returncode == 0
    result = run_script("train.py", "--dataset", str(image_folder), *TINY, "--epochs", "1", "--num-workers", "0",
                        "--image-size", "48", "--output-dir", str(out), "--resume", "auto")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "image_size: checkpoint 32, now 48" in result.stderr


def test_bad_files_are_skipped_counted_and_every_valid_image_is_evaluated(image_folder, tmp_path):
    bad = plant_bad_files(image_folder / "validation" / "beignets") + plant_bad_files(
        image_folder / "train" / "beignets")
    odd = plant_odd_images(image_folder / "validation" / "beignets") + plant_odd_images(
        image_folder / "train" / "beignets")
    out = tmp_path / "run"
    result = run_script("train.py", "--dataset", str(image_folder), *TINY, "--epochs", "1", "--num-workers", "1",
                        "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    for name in set(bad):
        assert f"{name} (" in result.stderr  # named in the log, with its split
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["skipped_files"] == len(bad)
    assert metrics["num_eval_samples"] == 9 + len(odd) // 2


def test_two_cpu_processes_count_every_eval_image_once_and_only_rank_0_writes(image_folder, tmp_path):
    out = tmp_path / "run"
    result = run_script("-m", "torch.distributed.run", "--nproc_per_node", "2", "train.py",
                        "--dataset", str(image_folder), *TINY, "--epochs", "2", "--num-workers", "0",
                        "--output-dir", str(out), env={"HF_TOKEN": FAKE_TOKEN})
    assert result.returncode == 0, result.stderr
    assert "2 process(es)" in result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_eval_samples"] == 9  # 9 images over 2 processes x batch 4: padding is not counted
    assert metrics["optimizer_updates"] == 2 * (24 // (4 * 2))  # the schedule is sized per process
    assert result.stderr.count("epoch 1: top-1") == 1  # logged by the main process only
    assert len(list(out.with_name(f"{out.name}-checkpoints").glob("update-*"))) == 2
    written = [p for p in out.rglob("*") if p.is_file()]
    assert all(FAKE_TOKEN.encode() not in p.read_bytes() for p in written)
    assert FAKE_TOKEN not in result.stdout + result.stderr


@pytest.mark.parametrize("flags, advice", [
    (["--dataset", "ethz/food101"], "--dataset demo"),
    (["--dataset", "demo", "--pretrained"], "--no-pretrained"),
])
@pytest.mark.parametrize("offline_env", [{"HF_HUB_OFFLINE": "1"},
                                         {"HF_HUB_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}])
def test_the_hub_being_unavailable_is_said_at_once_with_advice(flags, advice, offline_env, tmp_path):
    result = run_script("train.py", *flags, "--epochs", "1", "--output-dir", str(tmp_path / "x"),
                        env=offline_env, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "error:" in result.stderr and advice in result.stderr


def test_a_missing_dataset_folder_is_one_line_not_a_traceback(tmp_path):
    result = run_script("train.py", "--dataset", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "x"))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: --dataset {tmp_path / 'nowhere'}: no such folder (in {ROOT}), and not a Hub dataset id" \
        in result.stderr
