"""A run killed mid-epoch resumes bitwise identically; bad files never crash a run; two CPU processes count every
image once; nothing leaks the Hub token; the Hub failing is said at once. End-to-end, so marked slow."""

import json
import signal
import sys

import pytest

from conftest import (CHECKPOINTED, CLASSES, TINY, comparable, digest, plant_bad_files, plant_odd_images,
                      run_script, smooth_photo, start_script, wait_for)
from food101hf.checkpoint import LATEST, checkpoint_root

pytestmark = pytest.mark.slow

FAKE_TOKEN = "hf_fakeTokenThatMustNeverBeWritten"


@pytest.mark.xdist_group("checkpointed")  # conftest.trained(*CHECKPOINTED): one run on one worker
@pytest.mark.parametrize("data_path", [[], ["--decode-on-device"]], ids=["cpu-workers", "decode-on-device"])
def test_a_run_killed_mid_epoch_resumes_to_bitwise_identical_weights_and_metrics(data_path, trained, tmp_path):
    # 24 images / batch 4 = 6 updates an epoch; the first checkpoint (update 2) falls mid-epoch
    whole = trained(*CHECKPOINTED, *data_path)  # the same command run to its end, once a session
    killed = tmp_path / "killed"
    process = start_script([sys.executable, *whole.args, "--output-dir", str(killed)], tmp_path / "killed.log")
    wait_for(checkpoint_root(killed) / LATEST, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"

    resumed = run_script(*whole.args, "--output-dir", str(killed), "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and "epoch 1, batch 2, update 2" in resumed.stderr
    assert digest(killed / "model.safetensors") == digest(whole.out / "model.safetensors")
    assert comparable(json.loads((killed / "metrics.json").read_text())) == \
        comparable(json.loads((whole.out / "metrics.json").read_text()))


def test_a_run_on_photos_the_decode_rule_reduces_resumes_bitwise(image_folder, tmp_path):
    """The decode rule depends only on the file and the settings, so a resumed run decodes every photo as the
    uninterrupted one did: 640 x 480 photos (decoded at 1/4 for training at 32 px, 1/8 for evaluation) beside
    40 x 32 ones decoded whole; 27 images / batch 4 = 6 updates an epoch, a checkpoint every 4 falls mid-epoch."""
    for label in CLASSES:
        for split in ("train", "validation"):
            smooth_photo(image_folder / split / label / "large.jpg", (640, 480), seed=len(label))
    args = ["train.py", "--dataset", str(image_folder), *TINY, "--epochs", "2", "--num-workers", "1",
            "--checkpoint-every", "4"]
    assert run_script(*args, "--output-dir", str(tmp_path / "whole")).returncode == 0
    killed = tmp_path / "killed"
    process = start_script([sys.executable, *args, "--output-dir", str(killed)], tmp_path / "killed.log")
    wait_for(checkpoint_root(killed) / LATEST, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (killed / "model.safetensors").exists(), "the run finished before it could be killed"

    resumed = run_script(*args, "--output-dir", str(killed), "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from" in resumed.stderr and "epoch 1, batch 4, update 4" in resumed.stderr
    assert digest(killed / "model.safetensors") == digest(tmp_path / "whole" / "model.safetensors")
    assert comparable(json.loads((killed / "metrics.json").read_text())) == \
        comparable(json.loads((tmp_path / "whole" / "metrics.json").read_text()))

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
    assert result.stderr == f"error: --dataset {tmp_path / 'nowhere'}: no such folder\n"  # a path: no Hub advice
