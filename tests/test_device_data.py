"""The decode-on-device data path, run with device="cpu": the same code a GPU runs, minus nvJPEG."""

import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image

from conftest import plant_odd_images, write_image_folder
from food101hf import images as decoding
from food101hf.config import TrainConfig
from food101hf.data import Splits
from food101hf.loaders import SeededAugmentation, build_loaders
from food101hf.transforms import build_transform, with_transform
from food101hf.device_data import (DeviceBatchTransform, EncodedSamples, collate_encoded, crop_resize_flip,
                                   decode_batch, device_batches)

DATA_CONFIG = {"input_size": (3, 32, 32), "interpolation": "bilinear", "mean": (0.5, 0.5, 0.5),
               "std": (0.25, 0.25, 0.25), "crop_pct": 0.875}
CPU = torch.device("cpu")


def smooth_jpegs(root, count=6, size=(96, 64)):
    """JPEGs of smooth gradients, so that two resizers agree within a few grey levels."""
    root.mkdir(parents=True, exist_ok=True)
    y, x = np.mgrid[0:size[1], 0:size[0]]
    for i in range(count):
        pixels = np.stack([x * 255 / size[0], y * 255 / size[1], np.full(x.shape, 40 * i)], -1).astype(np.uint8)
        Image.fromarray(pixels).save(root / f"{i}.jpg", quality=95)
    return sorted(root.glob("*.jpg"))


def dataset_of(paths, labels=None) -> Dataset:
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    return Dataset.from_dict({"image": [str(p) for p in paths], "label": labels or [0] * len(paths)},
                             features=features)


def test_eval_batches_match_the_cpu_eval_transform(tmp_path):
    paths = smooth_jpegs(tmp_path)
    dataset = dataset_of(paths)
    expected = torch.stack([s["pixel_values"] for s in with_transform(
        dataset, build_transform(DATA_CONFIG, 32, False))]).float()
    encoded = EncodedSamples(dataset.cast_column("image", ImageFeature(decode=False)), "image", "label", None, 0.0,
                             32, DATA_CONFIG["crop_pct"])
    batch = collate_encoded([encoded[i] for i in range(len(encoded))])
    assert all(isinstance(image, bytes) for image in batch["images"])  # JPEGs travel encoded
    out = DeviceBatchTransform(32, DATA_CONFIG["mean"], DATA_CONFIG["std"], CPU)(batch)
    x = out["pixel_values"]
    assert x.shape == (6, 3, 32, 32) and x.dtype == torch.float32 and x.is_contiguous(memory_format=torch.channels_last)
    # roi_align's bilinear/area resize against torchvision's antialiased bilinear: a few grey levels apart
    assert (x - expected).abs().mean() * 0.25 * 255 < 3


def test_training_boxes_and_flips_depend_only_on_seed_epoch_and_index(tmp_path):
    paths = smooth_jpegs(tmp_path)
    cfg = TrainConfig(batch_size=2, num_workers=0, image_size=32)
    splits = Splits(dataset_of(paths), dataset_of(paths[:2]), ["a", "b"], "validation")
    train = build_loaders(splits, TrainConfig(**{**cfg.__dict__, "decode_on_device": True}), DATA_CONFIG, 32, 0)[0]
    samples = train.dataset
    assert isinstance(samples, SeededAugmentation)
    first = [samples[i]["box"] for i in range(6)]
    assert [samples[i]["box"] for i in (5, 3, 1)] == [first[5], first[3], first[1]]  # any order, same boxes
    samples.set_epoch(1)
    assert [samples[i]["box"] for i in range(6)] != first
    height, width = 64, 96
    for top, left, h, w in first:
        assert 0 <= top and top + h <= height and 0 <= left and left + w <= width


def test_other_formats_and_torchcodec_rejects_are_decoded_by_pillow(tmp_path, monkeypatch):
    folder = write_image_folder(tmp_path, ["a"], per_class=2, size=(48, 40))
    odd = plant_odd_images(folder / "a")
    paths = sorted((folder / "a").iterdir())
    encoded = EncodedSamples(dataset_of(paths).cast_column("image", ImageFeature(decode=False)), "image", "label",
                             None, 0.0, 32, 1.0)
    samples = [encoded[i] for i in range(len(paths))]
    batch = collate_encoded(samples)
    expected = [decoding.decode(str(p)) for p in paths]
    pngs = [i for i, p in enumerate(paths) if p.suffix == ".png"]
    assert pngs and all(isinstance(batch["images"][i], torch.Tensor) for i in pngs)  # decoded in the worker
    rotated = paths.index(folder / "a" / "rotated.jpg")
    assert batch["sizes"][rotated] == (48, 40) and "rotated.jpg" in odd  # upright size from EXIF

    decoded = decode_batch(batch["images"], batch["sizes"], CPU)
    assert all(torch.equal(a, b) for a, b in zip(decoded, expected))

    def refuse(data, *args, **kwargs):
        raise RuntimeError("nvJPEG: unsupported marker")

    monkeypatch.setattr(decoding, "decode_jpeg", refuse)  # one bad JPEG fails TorchCodec's whole batch
    decoded = decode_batch(batch["images"], batch["sizes"], CPU)
    assert all((a.int() - b.int()).abs().max() <= 2 for a, b in zip(decoded, expected))


def test_crop_resize_flip_crops_each_image_its_own_box():
    left_dark = torch.zeros(1, 3, 20, 40, dtype=torch.uint8)
    left_dark[..., 20:] = 200  # left half 0, right half 200
    images = [left_dark[0], left_dark[0][:, :, :30]]
    # a dark box; a bright one on the right edge of the narrower image (padded to the wider one's size)
    boxes = torch.tensor([[0.0, 0.0, 20.0, 16.0], [0.0, 24.0, 10.0, 6.0]])
    x = crop_resize_flip(images, boxes, torch.tensor([False, False]), 8)
    assert x[0].max() == 0 and x[1].min() == 200
    ramp = torch.arange(16, dtype=torch.uint8).repeat(3, 16, 1) * 10
    flipped = crop_resize_flip([ramp], torch.tensor([[0.0, 0.0, 16.0, 16.0]]), torch.tensor([True]), 16)
    assert torch.allclose(flipped[0], ramp.flip(-1).float())


def test_the_batch_ahead_keeps_accelerates_end_of_loader_mark_and_update_count(tmp_path, make_accelerator):
    paths = smooth_jpegs(tmp_path, count=10)
    encoded = EncodedSamples(dataset_of(paths).cast_column("image", ImageFeature(decode=False)), "image", "label",
                             None, 0.0, 16, 1.0)
    accelerator = make_accelerator(gradient_accumulation_steps=4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 16 * 16, 1))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(encoded, batch_size=1, collate_fn=collate_encoded)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    updates, marks = 0, []
    for batch in device_batches(loader, accelerator, DATA_CONFIG["mean"], DATA_CONFIG["std"]):
        marks.append(accelerator.gradient_state.end_of_dataloader)
        with accelerator.accumulate(model):
            accelerator.backward(model(batch["pixel_values"]).sum())
            optimizer.step()
            optimizer.zero_grad()
        updates += accelerator.sync_gradients
    assert marks == [False] * 9 + [True]  # as plain iteration gives: only the last batch is marked
    assert updates == 3  # windows of 4, 4 and the partial 2 (engine.updates_per_epoch)
    assert not accelerator.gradient_state.in_dataloader  # the loader finished its epoch


def test_colour_jitter_is_refused_on_the_device_path(tmp_path):
    paths = smooth_jpegs(tmp_path, count=2)
    splits = Splits(dataset_of(paths), dataset_of(paths), ["a", "b"], "validation")
    with pytest.raises(ValueError, match="--decode-on-device"):
        build_loaders(splits, TrainConfig(decode_on_device=True, color_jitter=0.4, num_workers=0), DATA_CONFIG, 32, 0)


@pytest.mark.slow
def test_the_device_check_script_runs_end_to_end_on_the_cpu():
    from conftest import run_script

    result = run_script("benchmarks/device_check.py", "--device", "cpu", "--images", "32", "--batch-size", "8",
                        "--image-size", "32", "--rounds", "1", "--num-workers", "1")
    assert result.returncode == 0, result.stderr
    for name in ("model-only", "GPU decode only", "GPU decode + augment", "GPU end-to-end", "CPU decode only",
                 "CPU decode + augment", "CPU end-to-end"):
        assert f"{name}: " in result.stdout, name
    assert "decode-on-device end-to-end: " in result.stdout
