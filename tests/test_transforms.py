"""timm's transforms on uint8 tensors (food101hf.transforms): the same pixels as timm's Pillow path, normalised
batches on the device."""

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import create_transform

from conftest import DATA_CONFIG
from food101hf.config import TrainConfig
from food101hf.transforms import ImageTransform, build_transform, model_input




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
