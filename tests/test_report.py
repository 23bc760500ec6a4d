import csv
import json
import re

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image

from conftest import CLASSES, FROM_SCRATCH, plant_audit_folder, run_script, weighted_accuracy, write_image_folder
from food101hf.transforms import build_transform, with_transform
from food101hf.report import write_report

DATA_CONFIG = {"interpolation": "bilinear", "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "crop_pct": 1.0}


class MeanColour(torch.nn.Module):
    """Logits from the image's mean colour: fixed weights, so some images are right and some wrong."""

    pretrained_cfg = {"mean": DATA_CONFIG["mean"], "std": DATA_CONFIG["std"]}

    def __init__(self, num_classes: int):
        super().__init__()
        self.head = torch.nn.Linear(3, num_classes)
        torch.nn.init.normal_(self.head.weight, generator=torch.Generator().manual_seed(0))
        torch.nn.init.zeros_(self.head.bias)

    def forward(self, x):
        return self.head(x.mean((2, 3)))


def _dataset(tmp_path):
    write_image_folder(tmp_path / "val", CLASSES, per_class=4, size=(40, 32))
    images, labels = [], []
    for index, name in enumerate(CLASSES):
        for path in sorted((tmp_path / "val" / name).iterdir()):
            images.append(str(path))
            labels.append(index)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=CLASSES)})
    return Dataset.from_dict({"image": images, "label": labels}, features=features)


def test_report_files_pictures_and_card_section(accelerator, tmp_path):
    dataset = _dataset(tmp_path)
    transform = build_transform(DATA_CONFIG, 16, False, normalize=False)  # uint8, as train.py's loaders
    loader = torch.utils.data.DataLoader(with_transform(dataset, transform), batch_size=5)
    model, loader = accelerator.prepare(MeanColour(len(CLASSES)), loader)
    out = tmp_path / "report"
    metrics = write_report(accelerator, model, loader, CLASSES, out, 16, tta=True, eval_split="validation")

    assert sorted(p.name for p in out.iterdir()) == [
        "card.md", "confident_mistakes.png", "confused_pairs.csv", "confusion_matrix.png", "metrics.json",
        "per_class.csv", "report.md"]
    assert json.loads((out / "metrics.json").read_text()) == metrics
    assert metrics["num_eval_samples"] == 12 and metrics["tta"] is True and metrics["image_size"] == 16
    with open(out / "per_class.csv", encoding="utf-8") as f:
        rows = [{"accuracy": float(r["accuracy"]), "support": int(r["support"])} for r in csv.DictReader(f)]
    assert weighted_accuracy(rows) == pytest.approx(metrics["top1"], rel=1e-12)
    assert 0 < metrics["top1"] < 1  # some mistakes to show
    with open(out / "confused_pairs.csv", encoding="utf-8") as f:
        pairs = list(csv.DictReader(f))
    assert sum(int(p["count"]) for p in pairs) == round((1 - metrics["top1"]) * 12)

    report = (out / "report.md").read_text(encoding="utf-8")
    stated = dict(re.findall(r"!\[[^\]]*\]\(([\w.]+)\)\n\n\*[^*]*\((\d+×\d+) px\)", report))
    assert set(stated) == {"confusion_matrix.png", "confident_mistakes.png"}
    for name, size in stated.items():
        image = Image.open(out / name)
        assert f"{image.width}×{image.height}" == size and image.width >= 1000
        assert np.asarray(image.convert("L")).std() > 10  # something drawn, not a blank canvas
    assert f"**top-1 {metrics['top1']:.2%}**" in report and "flip TTA" in report
    card = (out / "card.md").read_text(encoding="utf-8")
    assert "](report/confusion_matrix.png)" in card and "Most confused pairs" in card


@pytest.mark.slow
@pytest.mark.xdist_group("from_scratch")  # conftest.trained(*FROM_SCRATCH): one run on one worker
def test_report_and_audit_commands_on_a_trained_model(trained, tmp_path):
    run = trained(*FROM_SCRATCH)  # the session's shared run: read only (the report is written to its own folder)
    model, image_folder = run.out, str(run.dataset)

    out = tmp_path / "r"
    result = run_script("-m", "food101hf.report", "--model", str(model), "--dataset", image_folder,
                        "--split", "validation", "--image-size", "48", "--num-workers", "0", "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    assert "report: 100%" in result.stderr  # the progress bar
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["image_size"] == 48 and metrics["num_eval_samples"] == 9 and metrics["tta"] is False
    assert (out / "confusion_matrix.png").stat().st_size > 0

    result = run_script("-m", "food101hf.report", "--model", str(model), "--dataset", image_folder,
                        "--split", "tset", "--output-dir", str(out))
    assert result.returncode == 2 and "no split 'tset'" in result.stderr and "Traceback" not in result.stderr

    bad = plant_audit_folder(tmp_path / "bad")
    result = run_script("-m", "food101hf.report", "--audit", "--dataset", str(tmp_path / "bad"),
                        "--output-dir", str(tmp_path / "audit"))
    assert result.returncode == 0, result.stderr
    assert f"| bad files (training skips them) | {len(bad)} | 0 |" in result.stdout
    assert json.loads((tmp_path / "audit" / "audit.json").read_text())["duplicate_groups"] == 2


