import os
import shutil
import unicodedata
from pathlib import Path

import pytest
from PIL import Image

from conftest import CLASSES, DATA_CONFIG, smooth_photo, write_image_folder
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


def test_the_hold_out_is_the_same_images_for_every_seed(tmp_path):
    """--seed varies the training (initialisation, order, augmentation) but never what is evaluated on: seeds are
    compared on the same images, and polish.py or the report, with their own --seed, hold out what train.py did."""
    write_image_folder(tmp_path / "d" / "train", CLASSES, 10)
    held_out = [load_splits(TrainConfig(dataset=str(tmp_path / "d"), val_fraction=0.3, seed=seed))
                for seed in (0, 7)]
    assert held_out[0].eval_split == held_out[1].eval_split == "stratified 30% hold-out of train"
    assert [image.tobytes() for image in held_out[0].eval["image"]] == \
        [image.tobytes() for image in held_out[1].eval["image"]]


def test_max_samples_limit_both_splits(image_folder):
    splits = load_splits(TrainConfig(dataset=str(image_folder), max_train_samples=5, max_eval_samples=2))
    assert (len(splits.train), len(splits.eval)) == (5, 2)


VALIDATION_ADVICE = "or put evaluation photos in a validation/ folder (train/<class>/ beside validation/<class>/)"


def test_a_class_too_small_to_split_is_named_and_the_advice_works(tmp_path):
    write_image_folder(tmp_path / "d", ["pizza", "ramen"], 5)  # a flat folder: all of it is train
    write_image_folder(tmp_path / "d", ["sushi"], 1, seed=1)
    with pytest.raises(DatasetError) as error:
        load_splits(TrainConfig(dataset=str(tmp_path / "d")))
    assert str(error.value) == (f"{tmp_path / 'd'} has no validation or test split, so a stratified 0.1 of train is "
                                f"held out to evaluate on, but 1 class(es) have a single image, which cannot be both "
                                f"trained on and held out: sushi. Add photos to them, {VALIDATION_ADVICE}")
    # its advice works: a validation/ folder beside train/, where a class may have no evaluation photo
    (tmp_path / "d" / "train").mkdir()
    for name in ("pizza", "ramen", "sushi"):
        (tmp_path / "d" / name).rename(tmp_path / "d" / "train" / name)
    write_image_folder(tmp_path / "d" / "validation", ["pizza", "ramen"], 2, seed=2)
    assert load_splits(TrainConfig(dataset=str(tmp_path / "d"))).eval_split == "validation"


def test_classes_too_small_to_split_are_all_named_whatever_the_fraction(tmp_path):
    write_image_folder(tmp_path / "d" / "train", ["pizza", "ramen", "sushi", "tacos"], 1)
    write_image_folder(tmp_path / "d" / "train", ["pizza", "ramen"], 6, seed=1)
    for fraction in (0.1, 0.5):
        with pytest.raises(DatasetError, match="2 class.es. have a single image, which cannot be both trained on "
                                               "and held out: sushi, tacos. Add photos to them"):
            load_splits(TrainConfig(dataset=str(tmp_path / "d"), val_fraction=fraction))


@pytest.mark.parametrize("fraction, problem, advice", [
    (0.1, "0.1 of its 9 images is 1, fewer than its 3 classes: pass --val-fraction 0.34 or more (one image of each "
          "class)", 0.34),
    (0.8, "holding out 0.8 of its 9 images leaves 1 to train on, fewer than its 3 classes: pass --val-fraction "
          "0.66 or less", 0.66),
])
def test_a_hold_out_fraction_that_cannot_work_says_the_one_that_would(fraction, problem, advice, tmp_path):
    write_image_folder(tmp_path / "d" / "train", CLASSES, 3)
    with pytest.raises(DatasetError) as error:
        load_splits(TrainConfig(dataset=str(tmp_path / "d"), val_fraction=fraction))
    assert str(error.value).endswith(f"is held out to evaluate on, but {problem}, {VALIDATION_ADVICE}")
    splits = load_splits(TrainConfig(dataset=str(tmp_path / "d"), val_fraction=advice))  # the advice works
    assert {len(set(splits.train["label"])), len(set(splits.eval["label"]))} == {3}


def test_single_class_and_missing_folder_are_clear_errors(tmp_path):
    write_image_folder(tmp_path / "one" / "train", ["pizza"], 3)
    with pytest.raises(DatasetError, match="at least 2"):
        load_splits(TrainConfig(dataset=str(tmp_path / "one")))
    with pytest.raises(DatasetError, match="nope: no such folder$"):
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


def content(folder: Path, **flags) -> dict:
    """Each split's (size, content) identity."""
    identity = load_splits(TrainConfig(dataset=str(folder), num_workers=0, **flags)).identity()
    return {split: (found["images"], found["content"]) for split, found in identity.items()}


def test_the_data_identity_is_the_photos_not_where_they_lie(image_folder, tmp_path):
    identity = content(image_folder)
    assert identity == content(image_folder)  # stable across loads
    assert identity["train"][0] == 24 and identity["eval"][0] == 9
    # moved, and copied anew (new modification times: `cp -r`, a job's scratch space): the same data
    (tmp_path / "scratch-1001").mkdir()
    moved = image_folder.rename(tmp_path / "scratch-1001" / "data")
    assert content(moved) == identity
    restaged = shutil.copytree(moved, tmp_path / "scratch-1002" / "data", copy_function=shutil.copyfile)
    assert (restaged / "train" / "beignets" / "0.jpg").stat().st_mtime_ns != \
        (moved / "train" / "beignets" / "0.jpg").stat().st_mtime_ns
    assert content(restaged) == identity
    for split in ("train", "validation"):  # copied through a Mac, which names folders in Unicode NFD
        (restaged / split / "crème brûlée").rename(restaged / split / unicodedata.normalize("NFD", "crème brûlée"))
    assert content(restaged) == identity
    assert content(restaged, max_train_samples=12)["train"] != identity["train"]  # another subset


@pytest.mark.parametrize("change", ["add", "remove", "relabel", "edit", "edit, then move"])
def test_the_data_identity_changes_with_any_photo_and_names_its_split(change, image_folder, tmp_path):
    photo = image_folder / "train" / "beignets" / "0.jpg"
    Image.open(photo).save(photo, quality=90, comment=b"aaaa")  # so that an edit can keep its size
    before = content(image_folder)
    if change == "add":
        shutil.copyfile(photo, photo.with_name("copy.jpg"))
    elif change == "remove":
        photo.unlink()
    elif change == "relabel":
        photo.rename(image_folder / "train" / "crème brûlée" / "from-beignets.jpg")
    else:  # other bytes (the comment), the same size, still readable
        stat = photo.stat()
        photo.write_bytes(photo.read_bytes().replace(b"aaaa", b"bbbb"))
        assert photo.stat().st_size == stat.st_size
        if change == "edit, then move":  # the modification time put back too: only the bytes tell
            os.utime(photo, ns=(stat.st_atime_ns, stat.st_mtime_ns))
            image_folder = image_folder.rename(tmp_path / "moved")
    after = content(image_folder)
    assert after["eval"] == before["eval"] and after["train"] != before["train"]


def test_a_truncated_phone_photo_is_caught_though_the_check_decodes_it_at_an_eighth(image_folder):
    whole = smooth_photo(image_folder / "train" / "beignets" / "phone.jpg").read_bytes()
    (image_folder / "train" / "beignets" / "cut.jpg").write_bytes(whole[: len(whole) - 1000])
    splits = load_splits(TrainConfig(dataset=str(image_folder)))
    assert [(Path(s["file"]).name, s["error"].split(":")[0]) for s in splits.skipped] == [("cut.jpg", "OSError")]
    assert len(splits.train) == 25  # the whole phone photo is kept
