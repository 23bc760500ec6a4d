"""End-to-end runs of train.py as a user launches it (marked slow: ~20-40 s each on 2 cores)."""

import json

import pytest
import timm
import torch
import yaml
from safetensors.torch import load_file

from conftest import CLASSES, FROM_SCRATCH, TINY, run_script

pytestmark = pytest.mark.slow


@pytest.mark.xdist_group("from_scratch")  # conftest.trained(*FROM_SCRATCH): one run on one worker
def test_any_local_folder_trains_from_scratch_and_exports_a_timm_model(trained):
    run = trained(*FROM_SCRATCH)
    out, result = run.out, run.result
    assert f"model saved to {out.resolve()}" in result.stderr

    # the folder is the model: resume state lives beside it, where `hf upload run` cannot pick it up
    files = sorted(p.name for p in out.iterdir())
    assert files == ["README.md", "config.json", "metrics.json", "model.safetensors", "report", "train_config.yaml"]
    assert (out.with_name("run-checkpoints") / "latest").is_file()
    assert not [p for p in out.rglob("*") if p.suffix in (".bin", ".pkl", ".pt", ".pth")]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["num_eval_samples"] == 9 and metrics["image_size"] == 32 and metrics["epoch"] == 2
    low, high = metrics["top1_ci95"]
    assert 0 <= low <= metrics["top1"] <= high <= 1 and metrics["train_images_per_second"] > 0
    assert "top5" not in metrics  # 3 classes
    assert metrics["eval_warning"].startswith("only 9 eval images (3 per class): top-1 lies anywhere in")

    model = timm.create_model(f"local-dir:{out}", pretrained=True).eval()
    assert model.pretrained_cfg["label_names"] == sorted(CLASSES)
    assert tuple(model.pretrained_cfg["input_size"]) == (3, 32, 32)
    assert model(torch.randn(1, 3, 32, 32)).shape == (1, 3)
    assert yaml.safe_load((out / "train_config.yaml").read_text())["freeze"] == "none"
    card = (out / "README.md").read_text()
    assert "library_name: timm" in card and f"{metrics['top1'] * 100:.2f}%" in card
    # the error analysis of the final weights, in report/ and on the card; same images, same top-1
    report = json.loads((out / "report" / "metrics.json").read_text())
    assert (report["top1"], report["num_eval_samples"]) == (metrics["top1"], 9)
    assert "## Error analysis" in card and "](report/confusion_matrix.png)" in card


def test_default_freeze_mixup_accumulation_and_loader_workers_run_and_end_cleanly(image_folder, tmp_path):
    """The default recipe's freeze (asked for: from random weights every layer trains by default) and Mixup/CutMix
    with gradient accumulation, fed by loader workers. Persistent loader workers left alive to the interpreter's
    exit got multiprocessing's SIGTERM, and torch printed `DataLoader worker ... exited unexpectedly with exit code
    143` after every successful run."""
    out = tmp_path / "run"
    result = run_script("train.py", "--dataset", str(image_folder), *TINY, "--freeze", "conv1,bn1,layer1", "--epochs",
                        "2", "--grad-accum-steps", "2", "--num-workers", "2", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert "parameters trainable" in result.stderr and "frozen: conv1,bn1,layer1" in result.stderr
    assert json.loads((out / "metrics.json").read_text())["num_eval_samples"] == 9
    assert "Traceback" not in result.stderr and "exited unexpectedly" not in result.stderr, result.stderr


@pytest.mark.xdist_group("from_scratch")  # conftest.trained(*FROM_SCRATCH): one run on one worker
def test_load_trained_reads_an_output_folder_and_refuses_others(trained, tmp_path):
    from food101hf.model import load_trained

    assert load_trained(trained(*FROM_SCRATCH).out).pretrained_cfg["label_names"] == sorted(CLASSES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_trained(tmp_path / "empty")


def test_a_diverging_run_stops_at_the_update_where_the_loss_goes_non_finite(image_folder, tmp_path):
    """The issue's run: SGD at lr 1e6 without clipping. It logged loss 1.2 -> 9e7 -> 3e19 -> nan, exited 0 and
    exported NaN weights with `"eval_loss": NaN` (not JSON) in metrics.json."""
    out = tmp_path / "run"
    result = run_script("train.py", "--dataset", str(image_folder), "--freeze", "none", *TINY, "--opt", "sgd",
                        "--lr", "1e6", "--clip-grad", "none", "--mixup", "0", "--cutmix", "0", "--mixed-precision",
                        "no", "--checkpoint-every", "2", "--output-dir", str(out))
    assert result.returncode == 3, result.stderr  # errors.DivergedError: not a retry-me failure
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    checkpoints = sorted((tmp_path / "run-checkpoints").glob("update-*"))
    assert [p.name for p in checkpoints] == ["update-00000002"]
    assert errors[0] == (
        f"error: training diverged: the training loss is nan at optimizer update 4 (epoch 1). Nothing was exported; "
        f"the last checkpoint, {checkpoints[-1]}, holds the weights from before it. Try a lower --lr (now 1e+06) "
        f"and turn gradient clipping on (--clip-grad 1.0); a changed setting starts afresh (a checkpoint resumes "
        f"only with the same settings)")
    assert sorted(p.name for p in out.iterdir()) == ["train_config.yaml"]  # no model, metrics or card
    assert "Done." not in result.stdout
    weights = load_file(checkpoints[-1] / "model.safetensors")
    assert all(torch.isfinite(tensor).all() for tensor in weights.values() if tensor.is_floating_point())
