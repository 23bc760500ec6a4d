"""The loaders (food101hf.loaders): shuffled, drop_last training batches; every eval image once; each JPEG decoded
at the smallest scale that keeps what the model sees."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import Image as ImageFeature
from PIL.JpegImagePlugin import JpegImageFile

from conftest import DATA_CONFIG, smooth_photo
from food101hf.config import TrainConfig
from food101hf.data import load_splits
from food101hf.loaders import build_loaders


def test_loaders_drop_the_last_partial_batch_in_training_only(image_folder):
    cfg = TrainConfig(dataset=str(image_folder), batch_size=5, num_workers=0)
    train, evaluation = build_loaders(load_splits(cfg), cfg, DATA_CONFIG, 32, seed=0)
    assert [len(b["label"]) for b in train] == [5, 5, 5, 5]  # 24 images: the odd 4 are dropped
    sizes = [len(b["label"]) for b in evaluation]
    assert sizes == [5, 4]  # every eval image, once
    batch = next(iter(train))
    assert batch["pixel_values"].shape == (5, 3, 32, 32)


@pytest.fixture
def phone_and_food101_photos(tmp_path):
    """Two classes, each with 12 MP phone photos (4032 x 3024) and Food-101-sized ones (512 x 384)."""
    for split, count in (("train", 2), ("validation", 1)):
        for label in ("a", "b"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(count):
                smooth_photo(tmp_path / split / label / f"phone{i}.jpg", seed=i)
                smooth_photo(tmp_path / split / label / f"food{i}.jpg", (512, 384), seed=i)
    return tmp_path


def _scales(monkeypatch) -> list[int]:
    scales, real = [], JpegImageFile.draft

    def recording(self, mode, size):
        scales.append(self.size[0] // size[0])
        return real(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", recording)
    return scales


@pytest.mark.parametrize("device_path", [False, True], ids=["cpu-workers", "decode-on-device"])
def test_phone_photos_are_decoded_at_the_smallest_scale_that_keeps_what_the_model_sees(
        device_path, phone_and_food101_photos, monkeypatch):
    scales = _scales(monkeypatch)
    cfg = TrainConfig(dataset=str(phone_and_food101_photos), batch_size=2, num_workers=0,
                      decode_on_device=device_path)
    splits = load_splits(cfg)
    assert scales == [8] * 12  # the bad-file check: every JPEG at 1/8
    scales.clear()
    train, evaluation = build_loaders(splits, cfg, DATA_CONFIG, 192, seed=0)
    names = [Path(row["path"]).name for row in splits.train.cast_column("image", ImageFeature(decode=False))["image"]]
    samples = [train.dataset[i] for i in range(len(names))]
    # training: RandomResizedCrop's smallest crops need 1/4 of a phone photo; a Food-101 photo is decoded whole
    assert scales == [4] * sum(name.startswith("phone") for name in names)
    if device_path:  # the worker hands over a reduced phone photo decoded, a whole JPEG encoded
        for name, sample in zip(names, samples):
            if name.startswith("phone"):
                assert sample["image"].shape == (3, 756, 1008) and sample["size"] == (756, 1008)
                top, left, height, width = sample["box"]
                assert top + height <= 756 and left + width <= 1008 and min(height, width) >= 192
            else:
                assert isinstance(sample["image"], bytes) and sample["size"] == (384, 512)
    scales.clear()
    for i in range(len(evaluation.dataset)):
        evaluation.dataset[i]
    assert sorted(scales) == [8, 8]  # evaluation: resize the short side to 202 px, so 1/8 (378 px) is enough


def test_a_sample_is_the_same_drawn_in_a_worker_or_in_the_training_process_whose_rng_streams_it_leaves_alone(
        image_folder):
    cfg = TrainConfig(dataset=str(image_folder), batch_size=4, num_workers=0)
    samples = build_loaders(load_splits(cfg), cfg, DATA_CONFIG, 32, seed=0)[0].dataset
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    before = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    here = [samples[i]["pixel_values"] for i in range(8)]
    assert random.getstate() == before[0] and np.array_equal(np.random.get_state()[1], before[1])
    assert torch.equal(torch.get_rng_state(), before[2])  # Mixup's streams, in a worker-less loader
    in_a_worker = torch.utils.data.DataLoader(samples, batch_size=None, sampler=range(8), num_workers=1)
    assert all(torch.equal(a, b["pixel_values"]) for a, b in zip(here, in_a_worker, strict=True))
