"""End-to-end runs of train.py as a user launches it (marked slow: ~20-40 s each on 2 cores)."""

import json

import pytest
import timm
import torch
import yaml

from conftest import CLASSES, run_script

pytestmark = pytest.mark.slow

TINY = ["--no-pretrained", "--image-size", "32", "--epochs", "2", "--batch-size", "4", "--num-workers", "0",
        "--warmup-epochs", "0.5"]


def test_any_local_folder_trains_from_scratch_and_exports_a_timm_model(image_folder, tmp_path):
    out = tmp_path / "run"
    result = run_script("train.py", "--dataset", str(image_folder), "--freeze", "none", *TINY,
                        "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert f"model saved to {out.resolve()}" in result.stderr

    # the folder is the model: resume state lives beside it, where `hf upload run` cannot pick it up
    files = sorted(p.name for p in out.iterdir())
    assert files == ["README.md", "config.json", "metrics.json", "model.safetensors", "report", "train_config.yaml"]
    assert (tmp_path / "run-checkpoints" / "latest").is_file()
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


def test_default_freeze_and_mixup_run_with_accumulation(image_folder, tmp_path):
    out = tmp_path / "run"
    result = run_script("train.py", "--dataset", str(image_folder), *TINY, "--grad-accum-steps", "2",
                        "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert "parameters trainable" in result.stderr and "frozen: conv1,bn1,layer1" in result.stderr
    assert json.loads((out / "metrics.json").read_text())["num_eval_samples"] == 9


def test_offline_hub_dataset_fails_fast_with_advice(tmp_path):
    result = run_script("train.py", "--dataset", "ethz/food101", "--output-dir", str(tmp_path / "x"),
                        timeout=60)
    assert result.returncode == 2
    assert "error:" in result.stderr and "--dataset demo" in result.stderr
    assert "Traceback" not in result.stderr


def test_load_trained_reads_an_output_folder_and_refuses_others(image_folder, tmp_path):
    from food101hf.model import load_trained

    out = tmp_path / "run"
    assert run_script("train.py", "--dataset", str(image_folder), "--freeze", "none", *TINY,
                      "--epochs", "1", "--output-dir", str(out)).returncode == 0
    assert load_trained(out).pretrained_cfg["label_names"] == sorted(CLASSES)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="model.safetensors"):
        load_trained(tmp_path / "empty")


def test_a_run_with_loader_workers_ends_without_a_worker_error(image_folder, tmp_path):
    """Persistent loader workers left alive to the interpreter's exit got multiprocessing's SIGTERM, and torch
    printed `DataLoader worker ... exited unexpectedly with exit code 143` after every successful run."""
    result = run_script("train.py", "--dataset", str(image_folder), "--no-pretrained", "--image-size", "32",
                        "--epochs", "2", "--batch-size", "8", "--num-workers", "2",
                        "--output-dir", str(tmp_path / "run"))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr and "exited unexpectedly" not in result.stderr, result.stderr
