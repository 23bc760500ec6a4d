"""The folder rules (food101hf.folders): each failing input of issue 10 as a generated folder, with the exact
split, class and file counts that training, the audit and predict must agree on, and the log lines naming what
was ignored."""

import json
import logging
import os
import unicodedata
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import export_model_folder, run_script, write_image_folder
from food101hf.audit import audit_dataset
from food101hf.config import TrainConfig
from food101hf.data import load_splits
from food101hf.errors import DatasetError
from food101hf.folders import load_folder
from food101hf.predict import expand

CLASSES = ["pizza", "sushi"]


def splits_of(root: Path, **overrides):
    return load_splits(TrainConfig(dataset=str(root), **overrides))


def audited(root: Path) -> dict:
    return audit_dataset(TrainConfig(dataset=str(root)))


def trained_files(splits) -> set[str]:
    return {Path(image["path"]).name for image in splits.train.cast_column("image", _undecoded())["image"]}


def _undecoded():
    from datasets import Image as ImageFeature

    return ImageFeature(decode=False)


def paths(dataset) -> list[Path]:
    return [Path(image["path"]) for image in dataset.cast_column("image", _undecoded())["image"]]


# 1. Training/ and Test/ (how several public datasets ship): Test/ must not leak into training.
def test_training_and_test_folders_are_the_train_and_test_splits(tmp_path, caplog):
    write_image_folder(tmp_path / "d" / "Training", CLASSES, 6)
    write_image_folder(tmp_path / "d" / "Test", CLASSES, 2, seed=1)
    with caplog.at_level(logging.INFO):
        splits = splits_of(tmp_path / "d")
    assert (len(splits.train), len(splits.eval), splits.eval_split) == (12, 4, "test")
    assert all(p.parts[-3] == "Training" for p in paths(splits.train))
    assert all(p.parts[-3] == "Test" for p in paths(splits.eval))
    assert "Training/ is the train split" in caplog.text and "Test/ is the test split" in caplog.text
    result = audited(tmp_path / "d")
    assert {name: s["images"] for name, s in result["splits"].items()} == {"train": 12, "test": 4}


def test_two_folders_for_one_split_is_an_error_naming_both(tmp_path):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 2)
    write_image_folder(tmp_path / "d" / "Training", CLASSES, 2)
    with pytest.raises(DatasetError, match="Training/ and train/ are both the train split"):
        splits_of(tmp_path / "d")


def test_split_synonyms_are_case_insensitive_and_file_names_never_decide_splits(tmp_path):
    write_image_folder(tmp_path / "d" / "TRAIN", CLASSES, 4)
    write_image_folder(tmp_path / "d" / "Val", CLASSES, 2, seed=1)
    for name in ("test_1.jpg", "validation_2.jpg"):  # imagefolder read these as split keywords (datasets #7201)
        Image.new("RGB", (20, 20)).save(tmp_path / "d" / "TRAIN" / "pizza" / name)
    splits = splits_of(tmp_path / "d")
    assert (len(splits.train), len(splits.eval), splits.eval_split) == (10, 4, "validation")


def test_with_validation_and_test_it_evaluates_on_validation_and_leaves_test_alone(tmp_path, caplog):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 4)
    write_image_folder(tmp_path / "d" / "dev", CLASSES, 2, seed=1)
    write_image_folder(tmp_path / "d" / "testing", CLASSES, 3, seed=2)
    with caplog.at_level(logging.INFO):
        splits = splits_of(tmp_path / "d")
    assert (len(splits.train), len(splits.eval), splits.eval_split) == (8, 4, "validation")
    assert "the test split (6 images) is left untouched" in caplog.text


# 2. Photos kept in dated sub-folders of a class folder belong to that class.
def test_images_in_sub_folders_of_a_class_belong_to_it(tmp_path, caplog):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 4)
    write_image_folder(tmp_path / "d" / "train" / "pizza", ["2019", "2020"], 3, seed=3)
    with caplog.at_level(logging.INFO):
        splits = splits_of(tmp_path / "d", val_fraction=0.25)
    assert splits.label_names == CLASSES
    assert len(splits.train) + len(splits.eval) == 14
    assert sorted(np.bincount(list(splits.train["label"]) + list(splits.eval["label"]))) == [4, 10]
    assert "6 images in sub-folders of class folders in train/" in caplog.text
    assert audited(tmp_path / "d")["splits"]["train"]["classes"] == 2


# 3. A stray image directly in the split folder is in no class: ignored and named.
def test_a_stray_file_beside_the_class_folders_is_ignored_and_named(tmp_path, caplog):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 5)
    Image.new("RGB", (20, 20)).save(tmp_path / "d" / "train" / "cover.jpg")
    with caplog.at_level(logging.INFO):
        splits = splits_of(tmp_path / "d", val_fraction=0.2)
    assert (splits.label_names, len(splits.train) + len(splits.eval)) == (CLASSES, 10)
    assert "ignored 1 file not in a class folder: train/cover.jpg" in caplog.text
    assert caplog.text.count("cover.jpg") == 1
    ignored = audited(tmp_path / "d")["ignored"]
    assert ignored["not in a class folder"] == ["train/cover.jpg"]


# 4. A spreadsheet kept with the photos is never read as metadata.
def test_a_metadata_csv_is_ignored_and_named_never_read(tmp_path, caplog):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 5)
    write_image_folder(tmp_path / "d" / "validation", CLASSES, 2, seed=1)
    (tmp_path / "d" / "train" / "metadata.csv").write_text("dish,calories\npizza,800\n")
    (tmp_path / "d" / "train" / "pizza" / "notes.txt").write_text("from the market")
    with caplog.at_level(logging.INFO):
        splits = splits_of(tmp_path / "d")
    assert (len(splits.train), len(splits.eval), splits.label_names) == (10, 4, CLASSES)
    assert "2 files that are not images: train/metadata.csv, train/pizza/notes.txt" in caplog.text
    result = audited(tmp_path / "d")
    assert result["ignored"]["not an image"] == ["train/metadata.csv", "train/pizza/notes.txt"]
    assert result["splits"]["train"]["images"] == 10


# 5. AVIF and HEIC photos are images (HEIC through pillow-heif, registered on import).
def write_heic_and_avif(folder: Path, n: int, colour) -> None:
    import pillow_heif  # noqa: F401  the fixture is written by pillow-heif, as an iPhone's would be

    for i in range(n):
        image = Image.new("RGB", (40, 32), colour)
        image.save(folder / f"phone_{i}.HEIC")
        image.save(folder / f"web_{i}.avif")


def test_avif_and_heic_photos_are_trained_audited_and_predicted(tmp_path):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 4)
    write_image_folder(tmp_path / "d" / "validation", CLASSES, 1, seed=1)
    for name, colour in zip(CLASSES, [(200, 40, 40), (40, 160, 60)]):
        write_heic_and_avif(tmp_path / "d" / "train" / name, 2, colour)
    splits = splits_of(tmp_path / "d")
    assert (len(splits.train), splits.skipped) == (16, [])
    assert {p.suffix for p in paths(splits.train)} == {".jpg", ".HEIC", ".avif"}
    result = audited(tmp_path / "d")["splits"]["train"]
    assert (result["images"], result["unreadable"], result["other_files"]) == (16, 0, 0)
    assert len(expand([str(tmp_path / "d" / "train")])) == 16


# 6. Jupyter's checkpoints and macOS's AppleDouble files are hidden: skipped everywhere.
def plant_hidden(folder: Path) -> None:
    checkpoints = folder / ".ipynb_checkpoints"
    checkpoints.mkdir()
    Image.new("RGB", (20, 20)).save(checkpoints / "x.jpg")
    (folder / "._0.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    (folder / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (folder / "__MACOSX").mkdir()
    (folder / "__MACOSX" / "._1.jpg").write_bytes(b"\x00\x05\x16\x07")


def test_hidden_files_and_folders_are_skipped_by_training_audit_and_predict(tmp_path, caplog):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 4)
    write_image_folder(tmp_path / "d" / "validation", CLASSES, 1, seed=1)
    plant_hidden(tmp_path / "d" / "train")
    plant_hidden(tmp_path / "d" / "train" / "pizza")
    with caplog.at_level(logging.INFO):
        splits = splits_of(tmp_path / "d")
    assert (len(splits.train), splits.label_names, splits.skipped) == (8, CLASSES, [])
    assert "8 hidden files and folders" in caplog.text and "train/.ipynb_checkpoints" in caplog.text
    result = audited(tmp_path / "d")
    assert (result["splits"]["train"]["classes"], result["splits"]["train"]["images"]) == (2, 8)
    assert sorted(p.name for p in expand([str(tmp_path / "d")])) == sorted(p.name for p in paths(splits.train)
                                                                          + paths(splits.eval))
    apple_double = tmp_path / "d" / "train" / "pizza" / "._0.jpg"
    assert expand([str(apple_double)]) == [apple_double]  # named on the command line: still read


def test_a_hidden_file_in_the_root_is_skipped_without_a_line(tmp_path, caplog):
    """.DS_Store, .gitattributes or the demo's own .complete marker beside the splits are never data: the log
    does not name them (every demo run said `ignored 1 hidden file or folder: .complete`)."""
    write_image_folder(tmp_path / "d" / "train", CLASSES, 4)
    write_image_folder(tmp_path / "d" / "validation", CLASSES, 1, seed=1)
    for name in (".complete", ".DS_Store"):
        (tmp_path / "d" / name).write_text("{}")
    (tmp_path / "d" / "train" / "pizza" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07AppleDouble")
    with caplog.at_level(logging.INFO):
        splits_of(tmp_path / "d")
    assert "ignored 1 hidden file or folder: train/pizza/._0.jpg" in caplog.text
    assert ".complete" not in caplog.text and ".DS_Store" not in caplog.text


# 7. An extreme aspect ratio is a bad file: named, skipped, counted (and the resize is bounded: test_data).
def test_an_extreme_aspect_ratio_image_is_named_and_skipped(tmp_path):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 4)
    write_image_folder(tmp_path / "d" / "validation", CLASSES, 2, seed=1)
    Image.new("RGB", (1, 12000), (200, 40, 40)).save(tmp_path / "d" / "validation" / "pizza" / "strip.png")
    Image.new("RGB", (800, 100), (200, 40, 40)).save(tmp_path / "d" / "validation" / "pizza" / "panorama.jpg")
    splits = splits_of(tmp_path / "d")
    assert len(splits.eval) == 5  # the 1:8 panorama is a photo
    assert [(Path(s["file"]).name, s["split"]) for s in splits.skipped] == [("strip.png", "eval")]
    assert "aspect ratio 1:12000" in splits.skipped[0]["error"]
    result = audited(tmp_path / "d")
    assert result["splits"]["validation"]["unreadable"] == 1
    assert "aspect ratio 1:12000" in result["unreadable_files"][0]["error"]


# Neighbours the issue did not name.
def test_split_folders_inside_a_wrapper_folder_or_without_train_are_clear_errors(tmp_path):
    write_image_folder(tmp_path / "d" / "food-photos" / "train", CLASSES, 2)  # a zip extracted into its own folder
    with pytest.raises(DatasetError, match="the split folders are inside food-photos/; pass that folder"):
        splits_of(tmp_path / "d")
    write_image_folder(tmp_path / "e" / "test", CLASSES, 2)
    write_image_folder(tmp_path / "e", CLASSES, 2)
    with pytest.raises(DatasetError, match="no train/ .*folder beside test/; ignored: pizza/, sushi/"):
        splits_of(tmp_path / "e")


def test_a_folder_is_built_once_and_rebuilt_when_a_file_changes(tmp_path):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 3)
    first, again = load_folder(tmp_path / "d")["train"], load_folder(tmp_path / "d")["train"]
    assert first.cache_files == again.cache_files and first._fingerprint == again._fingerprint
    Image.new("RGB", (20, 20)).save(tmp_path / "d" / "train" / "pizza" / "0.jpg")  # same name, new picture
    assert load_folder(tmp_path / "d")["train"]._fingerprint != first._fingerprint


def test_nfd_and_nfc_class_folders_are_one_class_and_a_clash_is_an_error(tmp_path):
    nfc, nfd = "crème brûlée", unicodedata.normalize("NFD", "crème brûlée")
    write_image_folder(tmp_path / "d" / "train", [nfd, "sushi"], 4)  # written on a Mac
    write_image_folder(tmp_path / "d" / "validation", [nfc, "sushi"], 2, seed=1)  # on Linux
    splits = splits_of(tmp_path / "d")
    assert splits.label_names == [nfc, "sushi"] and (len(splits.train), len(splits.eval)) == (8, 4)
    write_image_folder(tmp_path / "d" / "train", [nfc], 1)
    with pytest.raises(DatasetError, match="train/: class folders .* are the same name"):
        splits_of(tmp_path / "d")


def test_uppercase_extensions_symlinked_folders_and_zip_files(tmp_path, caplog):
    write_image_folder(tmp_path / "d" / "train", ["pizza"], 3)
    for path in (tmp_path / "d" / "train" / "pizza").iterdir():
        path.rename(path.with_suffix(".JPEG"))
    write_image_folder(tmp_path / "elsewhere", ["sushi"], 3)
    os.symlink(tmp_path / "elsewhere" / "sushi", tmp_path / "d" / "train" / "sushi")
    os.symlink(tmp_path / "elsewhere" / "sushi", tmp_path / "elsewhere" / "sushi" / "loop")  # not entered again
    (tmp_path / "d" / "train" / "pizza" / "more.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)
    with caplog.at_level(logging.INFO):
        splits = splits_of(tmp_path / "d", val_fraction=0.34)
    assert splits.label_names == CLASSES and len(splits.train) + len(splits.eval) == 6
    assert "train/pizza/more.zip" in caplog.text


def test_a_class_folder_empty_after_filtering_is_an_error_saying_what_it_held(tmp_path):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 3)
    (tmp_path / "d" / "train" / "tiramisu").mkdir()
    (tmp_path / "d" / "train" / "tiramisu" / "recipe.txt").write_text("mascarpone")
    (tmp_path / "d" / "train" / "tiramisu" / "._0.jpg").write_bytes(b"\x00\x05\x16\x07")
    with pytest.raises(DatasetError, match=r"train/tiramisu/ has no images \(ignored there: 1 hidden, "
                                           r"1 not an image\)"):
        splits_of(tmp_path / "d")


# The peak memory of the resize: bounded whatever the aspect ratio (was +1.5 GB for a 1x12000 PNG).
def test_resizing_an_extreme_aspect_image_takes_bounded_memory(tmp_path):
    Image.new("RGB", (1, 12000), (200, 40, 40)).save(tmp_path / "strip.png")
    model = export_model_folder(tmp_path / "model", CLASSES, image_size=224)
    script = f"""
import resource, sys
from PIL import Image
from food101hf.config import TrainConfig
from food101hf.transforms import build_transform
from food101hf.predict import Predictor
config = dict(interpolation="bicubic", mean=(0.5,) * 3, std=(0.5,) * 3, crop_pct=0.875)
transforms = [build_transform(config, 224, is_training, TrainConfig()) for is_training in (False, True)]
predictor = Predictor({str(model)!r}, precision="fp32")
image = Image.open({str(tmp_path / "strip.png")!r}).convert("RGB")
transforms[0](Image.new("RGB", (300, 200))); predictor.preprocess(Image.new("RGB", (300, 200)))  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
shapes = [tuple(t(image).shape) for t in transforms] + [tuple(predictor.preprocess(image).shape)]
print(shapes, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) // 1024)
"""
    result = run_script("-c", script)
    assert result.returncode == 0, result.stderr
    shapes, grown_mib = result.stdout.strip().rsplit(" ", 1)
    assert shapes == str([(3, 224, 224)] * 3)
    assert int(grown_mib) < 100  # MiB of peak RSS growth; unbounded it was ~1,500


# One folder with every habit above: train.py, the audit and predict see the same images.
@pytest.mark.slow
def test_train_audit_and_predict_agree_on_a_messy_folder(tmp_path):
    root = tmp_path / "photos"
    write_image_folder(root / "Training", CLASSES, 6)
    write_image_folder(root / "Training" / "pizza", ["2019"], 2, seed=2)
    write_image_folder(root / "Test", CLASSES, 2, seed=1)
    write_heic_and_avif(root / "Test" / "sushi", 1, (40, 160, 60))
    plant_hidden(root / "Training" / "sushi")
    Image.new("RGB", (20, 20)).save(root / "Training" / "cover.jpg")
    (root / "Training" / "metadata.csv").write_text("dish,calories\n")
    out = tmp_path / "run"
    result = run_script("train.py", "--dataset", str(root), "--no-pretrained", "--freeze", "none", "--image-size",
                        "32", "--epochs", "1", "--batch-size", "4", "--num-workers", "0", "--no-report",
                        "--output-dir", str(out))
    assert result.returncode == 0, result.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["eval_split"], metrics["num_eval_samples"], metrics["skipped_files"]) == ("test", 6, 0)
    assert "14 train / 6 eval images" in result.stderr
    assert "Training/cover.jpg" in result.stderr and "Training/metadata.csv" in result.stderr
    # --no-report: no error analysis, in the folder or on the card
    assert not (out / "report").exists() and "Error analysis" not in (out / "README.md").read_text()

    result = run_script("-m", "food101hf.report", "--audit", "--dataset", str(root), "--output-dir",
                        str(tmp_path / "audit"))
    assert result.returncode == 0, result.stderr
    audit = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert {s: (v["images"], v["classes"]) for s, v in audit["splits"].items()} == {"train": (14, 2),
                                                                                    "test": (6, 2)}
    assert audit["split_folders"] == {"train": "Training", "test": "Test"}

    result = run_script("-m", "food101hf.predict", "--model", str(out), str(root / "Test"), str(root / "Training"))
    assert result.returncode == 0, result.stderr
    answered = [json.loads(line)["file"] for line in result.stdout.splitlines()]
    assert len(answered) == 6 + 14 + 1  # every image training or evaluation used, and the stray cover.jpg
    assert not any("/." in f or "__MACOSX" in f for f in answered)
    assert str(root / "Training" / "metadata.csv") in result.stderr
