"""polish.py as a user runs it, from a train.py-style folder (marked slow: ~10 s each on 2 cores)."""

import json

import pytest
import yaml
from safetensors.torch import load_file

from conftest import CLASSES, TINY_POLISH, export_model_folder, run_script, write_image_folder

pytestmark = pytest.mark.slow


def test_epochs_0_reestimates_batchnorm_and_only_evaluates_at_the_new_size(image_folder, tmp_path):
    init = export_model_folder(tmp_path / "run", sorted(CLASSES), image_size=32, dataset=str(image_folder))
    reported = json.loads((init / "metrics.json").read_text()) | {"top1": 1.0, "top1_ci95": [0.7008, 1.0],
                                                                   "image_size": 32}
    (init / "metrics.json").write_text(json.dumps(reported))  # the init's own top-1 on the same 9 images
    # by default: 32 px x 224/192, to a multiple of 16 and at least one step up: 48 px, into run-48 beside it
    result = run_script("polish.py", "--init", str(init), "--epochs", "0", *TINY_POLISH)
    out = tmp_path / "run-48"
    assert result.returncode == 0, result.stderr
    assert "re-estimated at 48 px on 8 training images" in result.stderr

    # ended below the init (random weights against a reported 1.0): said in the log, the exit summary, metrics.json
    # and the card
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["worse_than_init"] and metrics["init"] == {"top1": 1.0, "top1_ci95": [0.7008, 1.0],
                                                              "image_size": 32, "eval_split": "validation",
                                                              "num_eval_samples": 9}
    warning = (f"this polish made the model worse: top-1 {metrics['top1']:.4f} at 48 px, against 1.0000 for "
               f"{init} at 32 px on the same 9 validation images. Serve {init} instead, or polish at another "
               f"--image-size")
    assert f"WARNING {warning}" in result.stderr and f"Warning: {warning}." in result.stdout
    assert f"**Warning:** {warning.replace(str(init), 'run')}." in (out / "README.md").read_text()

    assert sorted(p.name for p in out.iterdir()) == ["README.md", "base_config.yaml", "config.json",
                                                      "metrics.json", "model.safetensors", "report",
                                                      "train_config.yaml"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "report" / "metrics.json").read_text())["top1"] == metrics["top1"]
    assert metrics["image_size"] == 48 and metrics["epoch"] == 0 and metrics["num_eval_samples"] == 9
    assert metrics["before_polish"] == {key: metrics[key] for key in ("top1", "top1_ci95", "eval_loss")}
    pretrained_cfg = json.loads((out / "config.json").read_text())["pretrained_cfg"]
    assert pretrained_cfg["input_size"] == pretrained_cfg["test_input_size"] == [3, 48, 48]
    for recipe in ("train_config.yaml", "base_config.yaml"):  # from the init, relative to this folder
        assert yaml.safe_load((out / recipe).read_text())["dataset"] == {"path": "../food"}

    before, after = load_file(init / "model.safetensors"), load_file(out / "model.safetensors")
    assert before.keys() == after.keys()
    for name, tensor in after.items():
        if not name.endswith("num_batches_tracked"):
            assert tensor.equal(before[name]) != name.endswith(("running_mean", "running_var")), name
    assert "BatchNorm statistics re-estimated on 2 batches" in (out / "README.md").read_text()


def test_a_dataset_with_other_classes_is_refused(image_folder, tmp_path):
    init = export_model_folder(tmp_path / "run", sorted(CLASSES), dataset=str(image_folder))
    other = write_image_folder(tmp_path / "other" / "train", ["pho", "ramen", "udon"], per_class=4).parent
    write_image_folder(other / "validation", ["pho", "ramen", "udon"], per_class=1)
    result = run_script("polish.py", "--init", str(init), "--dataset", str(other), "--epochs", "0", *TINY_POLISH,
                        "--output-dir", str(tmp_path / "x"), timeout=120)
    assert result.returncode == 2
    assert "has other classes (3: pho, ramen, udon) than" in result.stderr
    assert "polish on the dataset it was trained on" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_polish_checkpoints_and_resumes_like_train(image_folder, tmp_path):
    init = export_model_folder(tmp_path / "run", sorted(CLASSES), image_size=32, dataset=str(image_folder))
    out = tmp_path / "polished"
    args = ["polish.py", "--init", str(init), "--image-size", "48", "--epochs", "1", *TINY_POLISH, "--no-report",
            "--output-dir", str(out)]
    first = run_script(*args)
    assert first.returncode == 0, first.stderr
    assert (tmp_path / "polished-checkpoints" / "latest").is_file() and not (out / "report").exists()
    weights = load_file(out / "model.safetensors")

    again = run_script(*args, "--resume", "auto")
    assert again.returncode == 0, again.stderr
    assert "resumed from" in again.stderr and "epoch 2, batch 0, update 6" in again.stderr
    assert all(tensor.equal(weights[name]) for name, tensor in load_file(out / "model.safetensors").items())

    changed = run_script(*args, "--lr", "0.5", "--resume", "auto")
    assert changed.returncode == 2 and "comes from a different run (lr:" in changed.stderr
