"""Image decoding: JPEGs with TorchCodec (libjpeg-turbo on the CPU, batched nvJPEG on a GPU), everything else, and
every JPEG TorchCodec rejects, with Pillow (`data.to_rgb`).

Why TorchCodec: torchvision 0.29 deprecates its own decoders for it, and on one core of this project's 2-core
machine it decodes a Food-101-sized JPEG (512x384, ~80 KB) in ~1.3 ms where Pillow + RGB conversion takes ~2.2 ms,
with identical pixels (both are libjpeg-turbo with the same IDCT). It applies EXIF orientation and converts grey
and CMYK JPEGs to RGB as `to_rgb` does. What it does not do is Pillow's decompression-bomb check, so every file is
first opened with Pillow (the header only, ~30 us): that check, the format, and the size come from there, and a
file Pillow cannot even open fails with Pillow's error as it always did.
"""

from __future__ import annotations

import io
from pathlib import Path

import torch
from PIL import ExifTags, Image
from torchvision.transforms.functional import pil_to_tensor

try:
    from torchcodec.decoders import decode_jpeg
except (ImportError, OSError, RuntimeError):  # absent, or built for another torch: Pillow decodes everything
    decode_jpeg = None

TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height


def read_encoded(value) -> bytes:
    """The encoded file: from a `datasets` Image(decode=False) value ({"bytes": ..., "path": ...}), a path, or
    bytes as they are."""
    if isinstance(value, dict):
        return value["bytes"] if value.get("bytes") else Path(value["path"]).read_bytes()
    if isinstance(value, (str, Path)):
        return Path(value).read_bytes()
    return bytes(value)


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) of an opened image once its EXIF orientation is applied; reads the header only."""
    width, height = image.size
    if image.format == "JPEG" and image.getexif().get(ExifTags.Base.Orientation, 1) in TRANSPOSED:
        width, height = height, width
    return height, width


def draft_scale(image: Image.Image, min_size: int | None) -> bool:
    """Whether Pillow's draft mode would decode this JPEG at 1/2, 1/4 or 1/8 scale with the short side still
    >= min_size: then Pillow is the faster decoder (a 4000x3000 photo served at 224 px decodes several times
    faster than at full size, which TorchCodec always decodes)."""
    return bool(min_size) and image.format == "JPEG" and min(image.size) >= 2 * min_size


def decode(value, min_size: int | None = None) -> torch.Tensor:
    """An encoded image (see `read_encoded`) as a 3 x H x W uint8 RGB tensor, EXIF-rotated. JPEGs go through
    TorchCodec unless Pillow's draft mode can decode them smaller (`min_size`, the short side needed); TorchCodec's
    rejects (odd markers, 12-bit) and other formats through Pillow. Raises what Pillow raises for a file that
    cannot be read (OSError, SyntaxError, DecompressionBombError, ...)."""
    with _open(value) as image:  # the header only: format, size, decompression-bomb check
        if decode_jpeg is not None and image.format == "JPEG" and not draft_scale(image, min_size):
            image.fp.seek(0)
            try:
                return decode_jpeg(image.fp.read())
            except RuntimeError:  # libjpeg-turbo refused it; Pillow decides whether the file is readable
                pass
        if draft_scale(image, min_size):
            image.draft("RGB", (min_size, min_size))
        return pil_to_tensor(_to_rgb(image))


def open_rgb(value) -> Image.Image:
    """An encoded image, or a PIL image, as an RGB PIL image (for pictures and for Pillow-only transforms)."""
    return _to_rgb(value if isinstance(value, Image.Image) else _open(value))


def _open(value) -> Image.Image:
    """Pillow's lazy open (header only) of an encoded image; a file by its path, so errors name it."""
    if isinstance(value, dict):
        value = value["bytes"] or value["path"]
    return Image.open(io.BytesIO(value) if isinstance(value, (bytes, bytearray)) else value)


def _to_rgb(image: Image.Image) -> Image.Image:
    from .data import to_rgb  # here, not at the top: data.py imports this module

    return to_rgb(image)
