"""The generated image folders the benchmarks train on, cached under $FOOD101HF_CACHE (food101hf.demo's cache):

    food101_sized_jpegs(cache, per_class, val_per_class)  512x384, ~80 KB: Food-101's photos are at most 512 px
    phone_jpegs(cache, train_images, val_images)           4032x3024, ~2.3 MB: a 12 MP phone camera's

Both draw the demo's dishes (food101hf.demo.render_image), seeded by (class, index, split), with sensor-like noise so
that the files have a photo's size and decode cost.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image, ImageChops

from food101hf.demo import CLASSES, render_image

PHONE_SIZE = (4032, 3024)  # a 12 MP 4:3 phone camera
PHONE_QUALITY = 92  # phone cameras save at ~90-95


def food101_sized_jpegs(cache: Path, per_class: int, val_per_class: int) -> Path:
    """An image folder of 512x384 JPEGs with photo-like noise (Food-101 images are at most 512 px, ~80 KB), one
    per size asked for (a folder written for more images would train on all of them)."""
    root = cache / f"{per_class}-{val_per_class}"
    marker = root / ".complete"
    if marker.exists():
        return root
    for split, count in (("train", per_class), ("validation", val_per_class)):
        for class_index, dish in enumerate(CLASSES):
            folder = root / split / dish
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                rng = np.random.default_rng([class_index, i, split == "train"])
                pixels = np.asarray(render_image(dish, rng, (512, 384)), dtype=np.float32)
                pixels += rng.normal(0, 12, pixels.shape)  # sensor noise: realistic JPEG size and decode cost
                Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i}.jpg", quality=90)
    marker.touch()
    return root


def _phone_photo(path: Path, class_index: int, index: int, train: bool) -> None:
    """A dish drawn at 1/8 of PHONE_SIZE and enlarged (smooth, as a photo's content is at 12 MP), with +-4 grey
    levels of luma noise (a sensor's; its chroma stays smooth): ~2.3 MB at quality 92, like a phone's JPEG."""
    rng = np.random.default_rng([class_index, index, train, 12])
    width, height = PHONE_SIZE
    picture = render_image(CLASSES[class_index], rng, (width // 8, height // 8)).resize(PHONE_SIZE, Image.BICUBIC)
    tile = Image.fromarray(rng.integers(124, 133, (height // 4, width // 4), dtype=np.uint8)).convert("RGB")
    noise = Image.new("RGB", PHONE_SIZE)
    for top in range(0, height, tile.height):  # a tiled noise pattern costs a 16th of drawing it whole
        for left in range(0, width, tile.width):
            noise.paste(tile, (left, top))
    ImageChops.add(picture, noise, offset=-128).save(path, quality=PHONE_QUALITY)


def phone_jpegs(cache: Path, train_images: int, val_images: int) -> Path:
    """An image folder of 12 MP phone-camera JPEGs (4032x3024, ~2.3 MB), the classes taking turns, one per size
    asked for; written on every core (~1 s a photo on one)."""
    root = cache / f"{train_images}-{val_images}"
    marker = root / ".complete"
    if marker.exists():
        return root
    jobs = []
    for split, count in (("train", train_images), ("validation", val_images)):
        for i in range(count):
            folder = root / split / CLASSES[i % len(CLASSES)]
            folder.mkdir(parents=True, exist_ok=True)
            jobs.append((folder / f"{i}.jpg", i % len(CLASSES), i, split == "train"))
    with ProcessPoolExecutor() as pool:
        list(pool.map(_phone_photo, *zip(*jobs)))
    marker.touch()
    return root
