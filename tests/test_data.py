import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

from conftest import CLASSES, write_image_folder
from food101hf.config import TrainConfig
from food101hf.data import (DatasetError, ImageTransform, build_loaders, build_transform, load_splits, model_input,
                            to_rgb, with_transform)

DATA_CONFIG = {"interpolation": "bicubic", "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
               "crop_pct": 0.95}


def test_to_rgb_converts_every_mode_to_8bit_rgb():
    for mode in ("L", "CMYK", "P", "RGBA", "LA", "I;16", "1"):
        image = Image.new(mode, (7, 5))
        converted = to_rgb(image)
        assert converted.mode == "RGB" and converted.size == (7, 5), mode


def test_an_upright_rgb_image_is_not_copied():
    image = Image.new("RGB", (7, 5))
    assert to_rgb(image) is image


def test_transparency_is_composited_on_white():
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))  # fully transparent red
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    half = Image.new("RGBA", (4, 4), (0, 0, 0, 128))
    assert to_rgb(half).getpixel((0, 0))[0] == pytest.approx(127, abs=2)
    palette = Image.new("P", (4, 4), 0)
    palette.info["transparency"] = 0
    assert to_rgb(palette).getpixel((0, 0)) == (255, 255, 255)


def test_16bit_greyscale_is_scaled_not_clipped():
    image = Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.uint16))
    assert [to_rgb(image).getpixel((x, 0))[0] for x in range(3)] == [0, 127, 255]


def test_exif_orientation_is_applied():
    image = Image.new("RGB", (20, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif)
    assert to_rgb(Image.open(buffer)).size == (10, 20)


def test_cmyk_white_stays_white():
    assert to_rgb(Image.new("CMYK", (2, 2), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)


@pytest.mark.parametrize("is_training", [True, False])
def test_transforms_give_normalised_tensors_of_the_requested_size(is_training):
    cfg = TrainConfig()
    transform = build_transform(DATA_CONFIG, 48, is_training, cfg)
    out = transform(Image.new("RGB", (120, 80), (255, 255, 255)))
    assert out.shape == (3, 48, 48) and out.dtype == torch.float32
    assert out[0].mean().item() == pytest.approx((1 - 0.485) / 0.229, abs=0.05)
    assert transform.tensor is not None  # the fast path: v2 on uint8 tensors


def photo_like(size=(96, 72), seed=0) -> Image.Image:
    coarse = np.random.default_rng(seed).integers(0, 256, (6, 8, 3), dtype=np.uint8)
    return Image.fromarray(coarse).resize(size, Image.BICUBIC)


@pytest.mark.parametrize("is_training", [True, False])
def test_the_uint8_tensor_path_matches_timms_pillow_transform(is_training):
    # a crop with no randomness left (the whole 4:3 image, no flip), so both paths must give the same picture
    options = dict(scale=(1.0, 1.0), ratio=(4 / 3, 4 / 3), hflip=0.0, color_jitter=0.0) if is_training \
        else dict(crop_pct=0.95)
    timm_transform = create_transform((3, 40, 40), is_training=is_training, interpolation="bicubic", **options)
    transform = ImageTransform(timm_transform)
    image = photo_like()
    fast, reference = transform(image), timm_transform(image)
    assert fast.shape == reference.shape == (3, 40, 40) and fast.dtype == reference.dtype == torch.float32
    assert (fast - reference).abs().mean() < 0.02  # ~1 grey level after normalisation by std ~0.225
    assert (fast - reference).abs().max() < 0.15


def test_model_input_normalises_uint8_batches_like_timms_transform():
    image = photo_like((48, 48))
    uint8 = build_transform(DATA_CONFIG, 48, False, normalize=False)(image)
    assert uint8.dtype == torch.uint8
    batch = model_input(torch.stack([uint8, uint8]), DATA_CONFIG["mean"], DATA_CONFIG["std"])
    assert batch.is_contiguous(memory_format=torch.channels_last) and batch.dtype == torch.float32
    torch.testing.assert_close(batch[1], build_transform(DATA_CONFIG, 48, False)(image), atol=1e-5, rtol=0)
    assert model_input(batch, (0, 0, 0), (9, 9, 9)).equal(batch)  # float batches are already normalised


def test_transforms_without_a_v2_twin_run_as_timm_built_them():
    cfg = TrainConfig(auto_augment="rand-m9-mstd0.5", color_jitter=0.4)
    transform = build_transform(DATA_CONFIG, 48, True, cfg)
    assert transform.tensor is None
    assert transform(photo_like()).shape == (3, 48, 48)
    jittered = build_transform(DATA_CONFIG, 48, True, TrainConfig(color_jitter=0.4))
    assert "ColorJitter" in repr(jittered.tensor)
    assert "ColorJitter" not in repr(build_transform(DATA_CONFIG, 48, True, TrainConfig()).tensor)  # jitter 0


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


def test_loaders_drop_the_last_partial_batch_in_training_only(image_folder):
    cfg = TrainConfig(dataset=str(image_folder), batch_size=5, num_workers=0)
    train, evaluation = build_loaders(load_splits(cfg), cfg, DATA_CONFIG, 32, seed=0)
    assert [len(b["label"]) for b in train] == [5, 5, 5, 5]  # 24 images: the odd 4 are dropped
    sizes = [len(b["label"]) for b in evaluation]
    assert sizes == [5, 4]  # every eval image, once
    batch = next(iter(train))
    assert batch["pixel_values"].shape == (5, 3, 32, 32)


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
