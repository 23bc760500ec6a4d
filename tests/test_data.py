from pathlib import Path

import pytest

from conftest import CLASSES, DATA_CONFIG, write_image_folder
from food101hf.config import TrainConfig
from food101hf.data import load_splits
from food101hf.errors import DatasetError
from food101hf.transforms import build_transform, with_transform


def test_local_folder_with_validation_split(image_folder):
    splits = load_splits(TrainConfig(dataset=str(image_folder)))
    assert splits.label_names == sorted(CLASSES)
    assert (len(splits.train), len(splits.eval), splits.eval_split) == (24, 9, "validation")


def test_test_folder_is_used_when_there_is_no_validation(tmp_path):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 4)
    write_image_folder(tmp_path / "d" / "test", CLASSES, 2)
    splits = load_splits(TrainConfig(dataset=str(tmp_path / "d")))
    assert (splits.eval_split, len(splits.eval)) == ("test", 6)


def test_folder_without_eval_split_gets_a_deterministic_stratified_hold_out(tmp_path):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 10)
    cfg = TrainConfig(dataset=str(tmp_path / "d"), val_fraction=0.3)
    first, second = load_splits(cfg), load_splits(cfg)
    assert "hold-out" in first.eval_split
    assert len(first.eval) == 9 and len(first.train) == 21
    assert sorted(first.eval["label"]) == [0, 0, 0, 1, 1, 1, 2, 2, 2]  # every class, in proportion
    assert first.eval["image"][0].tobytes() == second.eval["image"][0].tobytes()


def test_max_samples_limit_both_splits(image_folder):
    splits = load_splits(TrainConfig(dataset=str(image_folder), max_train_samples=5, max_eval_samples=2))
    assert (len(splits.train), len(splits.eval)) == (5, 2)


def test_too_small_for_a_hold_out_is_a_clear_error(tmp_path):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 3)
    with pytest.raises(DatasetError, match="add a validation/ folder"):
        load_splits(TrainConfig(dataset=str(tmp_path / "d")))


def test_single_class_and_missing_folder_are_clear_errors(tmp_path):
    write_image_folder(tmp_path / "one" / "train", ["pizza"], 3)
    with pytest.raises(DatasetError, match="at least 2"):
        load_splits(TrainConfig(dataset=str(tmp_path / "one")))
    with pytest.raises(DatasetError, match="nope: no such folder .in .*, and not a Hub dataset id"):
        load_splits(TrainConfig(dataset=str(tmp_path / "nope")))


def test_bad_files_are_named_and_skipped_and_odd_valid_images_are_kept(image_folder):
    from conftest import plant_bad_files, plant_odd_images

    bad = plant_bad_files(image_folder / "validation" / "beignets")
    odd = plant_odd_images(image_folder / "validation" / "beignets")
    bad_train = plant_bad_files(image_folder / "train" / "fish and chips")
    splits = load_splits(TrainConfig(dataset=str(image_folder)))
    assert len(splits.eval) == 9 + len(odd)  # every valid image, the odd ones included
    assert len(splits.train) == 24
    assert sorted(Path(s["file"]).name for s in splits.skipped) == sorted(bad + bad_train)
    errors = {Path(s["file"]).name: s["error"] for s in splits.skipped if s["split"] == "eval"}
    assert errors["bomb.png"].startswith("DecompressionBombError")
    assert "UnidentifiedImageError" in errors["notes.jpg"]
    for sample in with_transform(splits.eval, build_transform(DATA_CONFIG, 32, False)):
        assert sample["pixel_values"].shape == (3, 32, 32)


def test_an_empty_class_folder_or_split_is_refused_before_training(tmp_path):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 3)
    (tmp_path / "d" / "train" / "tiramisu").mkdir()
    with pytest.raises(DatasetError, match="tiramisu/ has no images"):
        load_splits(TrainConfig(dataset=str(tmp_path / "d")))
    (tmp_path / "d" / "train" / "tiramisu").rmdir()
    (tmp_path / "d" / "validation").mkdir()
    with pytest.raises(DatasetError, match="validation has no class folders"):
        load_splits(TrainConfig(dataset=str(tmp_path / "d")))


def test_a_class_whose_every_image_is_unreadable_is_refused(tmp_path):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 3)
    write_image_folder(tmp_path / "d" / "validation", CLASSES, 1)
    for image in (tmp_path / "d" / "train" / "beignets").iterdir():
        image.write_bytes(b"broken")
    with pytest.raises(DatasetError, match="no readable training images for class.*beignets"):
        load_splits(TrainConfig(dataset=str(tmp_path / "d")))


def test_a_max_train_samples_subset_says_which_classes_it_left_out_and_why(image_folder, caplog):
    with caplog.at_level("WARNING"):
        splits = load_splits(TrainConfig(dataset=str(image_folder), max_train_samples=2, num_workers=0))
    present = {splits.label_names[label] for label in splits.train["label"]}
    absent = [name for name in splits.label_names if name not in present]
    assert len(splits.train) == 2 and absent
    assert caplog.messages == [
        f"the --max-train-samples subset (a seeded random 2 of 24 training images) has no readable image of "
        f"{len(absent)} of the 3 classes ({', '.join(absent)}): the model cannot learn them in this run; raise "
        f"--max-train-samples for every class to appear"]


def test_the_data_identity_changes_with_the_photos_and_the_subset(image_folder):
    cfg = TrainConfig(dataset=str(image_folder), num_workers=0)
    identity = load_splits(cfg).identity()
    assert identity == load_splits(cfg).identity()  # stable across loads
    assert identity["train"]["images"] == 24 and identity["eval"]["images"] == 9
    subset = load_splits(TrainConfig(dataset=str(image_folder), num_workers=0, max_train_samples=12)).identity()
    assert subset["train"]["fingerprint"] != identity["train"]["fingerprint"]
    next((image_folder / "train" / "beignets").glob("*.jpg")).unlink()
    changed = load_splits(cfg).identity()
    assert changed["train"]["images"] == 23 and changed["train"]["fingerprint"] != identity["train"]["fingerprint"]


def test_a_truncated_phone_photo_is_caught_though_the_check_decodes_it_at_an_eighth(image_folder):
    from conftest import smooth_photo

    whole = smooth_photo(image_folder / "train" / "beignets" / "phone.jpg").read_bytes()
    (image_folder / "train" / "beignets" / "cut.jpg").write_bytes(whole[: len(whole) - 1000])
    splits = load_splits(TrainConfig(dataset=str(image_folder)))
    assert [(Path(s["file"]).name, s["error"].split(":")[0]) for s in splits.skipped] == [("cut.jpg", "OSError")]
    assert len(splits.train) == 25  # the whole phone photo is kept
