"""Bytes to RGB pixels: the one place food101hf opens, checks and decodes an image, for training, evaluation, the
report, the audit and predict alike, each JPEG at the smallest size that keeps what its pixels are for
(`DecodeRule`).

    decode(value, rule)         3 x H x W uint8 RGB tensor (TorchCodec for JPEGs, Pillow for the rest)
    open_rgb(value, rule)       RGB PIL image (pictures, Pillow-only transforms)
    check_image(value)          (mode, size) after decoding the whole file: the bad-file check
    load_image / load_pixels    any input predict accepts (path, bytes, PIL image, numpy array), or ImageError

A value is what a `datasets` Image(decode=False) column holds ({"bytes": ..., "path": ...}), a path, or bytes.

Why TorchCodec for JPEGs: torchvision 0.29 deprecates its own decoders for it, and on one core of this project's
2-core machine it decodes a Food-101-sized JPEG (512x384, ~80 KB) in ~1.3 ms where Pillow + RGB conversion takes
~2.2 ms, with identical pixels (both are libjpeg-turbo with the same IDCT). It applies EXIF orientation and converts
grey and CMYK JPEGs to RGB as `to_rgb` does. What it does not do is Pillow's decompression-bomb check, so every file
is first opened with Pillow (the header only, ~30 us): that check, the format and the size come from there, and a
file Pillow cannot even open fails with Pillow's error. Nor can it decode at a reduced size: a JPEG that `DecodeRule`
lets decode at 1/2-1/8 goes through Pillow's draft mode (libjpeg-turbo's DCT scaling).

Every format Pillow opens here is an image (`image_extensions`), iPhones' HEIC/HEIF through pillow-heif, registered
when this module is imported.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pillow_heif
import torch
from PIL import ExifTags, Image, ImageOps
from torchvision.transforms.functional import pil_to_tensor

from .errors import ImageError

try:
    from torchcodec.decoders import decode_jpeg
except (ImportError, OSError, RuntimeError):  # absent, or built for another torch: Pillow decodes everything
    decode_jpeg = None

pillow_heif.register_heif_opener()  # iPhones save .heic: Pillow opens them from here on, in every command

TRANSPOSED = {5, 6, 7, 8}  # EXIF orientations that swap width and height
# Photos stay within 1:8 (phone panoramas, the widest photos people take, reach about that); 1:10 leaves headroom.
# Beyond it the square crop the model sees holds under a tenth of the picture, and such files are strips, banners
# or broken exports: the bad-file check rejects them and every resize crops them to this ratio first.
MAX_ASPECT_RATIO = 10
# libjpeg's DCT scaling, as Pillow's draft mode offers it: 1/8, 1/4 or 1/2 of the stored size, largest first
DRAFT_SCALES = (8, 4, 2)
DRAFTABLE = frozenset({"JPEG", "MPO"})  # MPO: a JPEG with further pictures after it (many phones); the first decoded


@dataclass(frozen=True)
class DecodeRule:
    """What decoded pixels are for, so that a JPEG is decoded at the smallest scale (1/8, 1/4, 1/2, else whole)
    that loses nothing of them. Decoding reduced is libjpeg's DCT scaling (Pillow's `draft`): ~2x less CPU for a
    4032x3024 phone photo at 1/4 than whole, and the images after it are 16x smaller to crop and resize.

    Evaluation and predict at S px with crop_pct c (timm's eval transform) resize the short side to floor(S / c)
    and crop the centre: the decoded short side must be at least that (`short_side`).

    Training's RandomResizedCrop at S px (`crop_size`) draws an area share s in [s_min, 1] of the image's area A
    and an aspect ratio r in [r_min, r_max] (`crop_scale` = s_min, `crop_ratio` = (r_min, r_max)), a crop of
    sqrt(s A r) x sqrt(s A / r) px, resized to S x S. Its shorter side is sqrt(s A min(r, 1/r)), smallest for the
    smallest, most elongated crop: sqrt(s_min A rho) with rho = min(r_min, 1 / r_max). Every crop it can draw
    keeps at least S px a side (none is enlarged) iff s_min A rho >= S^2. For a 4:3 photo and timm's ratios (3/4,
    4/3), A = 4/3 short^2 and rho = 3/4: short >= S / sqrt(s_min). At 192 px with s_min = 0.08 that is 679 px: a
    4032x3024 photo decodes at 1/4 (1008x756), a Food-101 photo (512x384) whole, as before (its smallest crops are
    enlarged even then). The crops torchvision falls back to after ten misses are larger. A is the area the
    transform sees, after `bound_aspect_ratio`.

    No rule at all (the default) needs no pixels: the bad-file check, which decodes at 1/8. Whatever the scale,
    libjpeg entropy-decodes every byte of the file, so a truncated or corrupt file fails at 1/8 as it fails
    whole. The scale depends only on the file's header and the settings, so exact resume stays exact."""
    short_side: int = 0
    crop_size: int = 0
    crop_scale: float = 1.0
    crop_ratio: tuple[float, float] = (1.0, 1.0)

    def keeps_enough(self, width: int, height: int) -> bool:
        """Whether a decode of width x height px (as stored) keeps everything this rule's transform uses."""
        short = min(width, height)
        area = short * min(max(width, height), MAX_ASPECT_RATIO * short)
        rho = min(self.crop_ratio[0], 1 / self.crop_ratio[1])
        return short >= self.short_side and self.crop_scale * area * rho >= self.crop_size ** 2

    def reduction(self, width: int, height: int) -> int:
        """The largest of DRAFT_SCALES whose decode (ceil(width / f) x ceil(height / f) px, as libjpeg rounds)
        keeps enough, else 1."""
        return next((f for f in DRAFT_SCALES if self.keeps_enough(math.ceil(width / f), math.ceil(height / f))), 1)


def image_extensions() -> frozenset[str]:
    """Lower-case extensions of every format Pillow can open in this environment (plugins and pillow-heif as
    installed): Image.registered_extensions() without the write-only formats (PDF, Palm). MPO, a JPEG with extra
    pictures, is opened by the JPEG plugin, so it is not in Image.OPEN under its own name."""
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items()
                     if fmt in Image.OPEN or fmt == "MPO")


def read_encoded(value) -> bytes:
    """The encoded file: from a `datasets` Image(decode=False) value ({"bytes": ..., "path": ...}), a path, or
    bytes as they are."""
    if isinstance(value, dict):
        return value["bytes"] if value.get("bytes") else Path(value["path"]).read_bytes()
    if isinstance(value, (str, Path)):
        return Path(value).read_bytes()
    return bytes(value)


def open_image(value) -> Image.Image:
    """Pillow's lazy open (header only) of an encoded image; a file by its path, so errors name it."""
    if isinstance(value, dict):
        value = value["bytes"] or value["path"]
    return Image.open(io.BytesIO(value) if isinstance(value, (bytes, bytearray)) else value)


def upright_size(image: Image.Image) -> tuple[int, int]:
    """(height, width) of an opened image once its EXIF orientation is applied; reads the header only."""
    width, height = image.size
    if image.format == "JPEG" and image.getexif().get(ExifTags.Base.Orientation, 1) in TRANSPOSED:
        width, height = height, width
    return height, width


def check_aspect_ratio(width: int, height: int) -> None:
    """Raise ValueError for an image whose long side exceeds MAX_ASPECT_RATIO times its short side."""
    if max(width, height) > MAX_ASPECT_RATIO * max(min(width, height), 1):
        ratio = max(width, height) / max(min(width, height), 1)
        raise ValueError(f"{width}x{height} px, aspect ratio 1:{ratio:.0f} is beyond 1:{MAX_ASPECT_RATIO} "
                         f"(food101hf.images.MAX_ASPECT_RATIO)")


def reduce(image: Image.Image, rule: DecodeRule | None) -> int:
    """Set an opened, not yet loaded, JPEG to decode at `rule`'s scale (Pillow's draft); return the scale's
    divisor (1: whole; always 1 for other formats and without a rule). Asking Pillow for (width // f, height // f)
    makes it pick exactly f: width // (width // f) lies in [f, 2f)."""
    factor = rule.reduction(*image.size) if rule is not None and image.format in DRAFTABLE else 1
    if factor > 1:
        image.draft("RGB", (image.width // factor, image.height // factor))
    return factor


def check_image(value) -> tuple[str, tuple[int, int]]:
    """The bad-file check: (mode, (width, height)) as stored, after decoding the whole file at the smallest scale
    (a JPEG at 1/8, ~4x less CPU than whole for a phone photo; `DecodeRule`). Raises whatever Pillow raises for a
    file that cannot be read (OSError, SyntaxError, DecompressionBombError, ...: a truncated file opens fine and
    fails only when decoded), and ValueError for an aspect ratio beyond MAX_ASPECT_RATIO (known from the header, so
    a strip is rejected before it is decoded)."""
    with open_image(value) as image:
        check_aspect_ratio(*image.size)
        mode, size = image.mode, image.size
        reduce(image, DecodeRule())
        image.load()
        return mode, size


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image as 8-bit RGB: EXIF-rotated, transparency composited on white, 16-bit scaled down. Decoded
    here, so a broken file fails inside the caller's error handling; an upright RGB image comes back as it is
    (Pillow's no-op rotation and conversion would each copy it: 0.08 ms per Food-101 photo)."""
    image.load()
    if image.getexif().get(ExifTags.Base.Orientation, 1) != 1:
        image = ImageOps.exif_transpose(image)
    if image.mode in ("I", "I;16", "I;16B", "I;16L"):
        # 16-bit greyscale; a plain convert() would clip everything above 255 to white
        image = Image.fromarray((np.asarray(image, dtype=np.float32) / 257).clip(0, 255).astype(np.uint8))
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "La"):
        image = image.convert("RGBA")
        background = Image.new("RGBA", image.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, image)
    return image if image.mode == "RGB" else image.convert("RGB")


def open_rgb(value, rule: DecodeRule | None = None) -> Image.Image:
    """An encoded image, or a PIL image, as an RGB PIL image (for pictures and for Pillow-only transforms); an
    encoded JPEG decoded at `rule`'s scale."""
    if isinstance(value, Image.Image):
        return to_rgb(value)
    image = open_image(value)
    reduce(image, rule)
    return to_rgb(image)


def decode(value, rule: DecodeRule | None = None) -> torch.Tensor:
    """An encoded image as a 3 x H x W uint8 RGB tensor, EXIF-rotated. A JPEG `rule` lets decode reduced goes
    through Pillow's draft (TorchCodec has no reduced decode); one decoded whole through TorchCodec, its rejects
    (odd markers, 12-bit) and other formats through Pillow. Raises what Pillow raises for a file that cannot be
    read (OSError, SyntaxError, DecompressionBombError, ...)."""
    with open_image(value) as image:  # the header only: format, size, decompression-bomb check
        if reduce(image, rule) == 1 and decode_jpeg is not None and image.format == "JPEG":
            image.fp.seek(0)
            try:
                return decode_jpeg(image.fp.read())
            except RuntimeError:  # libjpeg-turbo refused it; Pillow decides whether the file is readable
                pass
        return pil_to_tensor(to_rgb(image))


def bound_aspect_ratio(image: Image.Image | torch.Tensor,
                       max_ratio: float = MAX_ASPECT_RATIO) -> Image.Image | torch.Tensor:
    """The image's centre, cropped along its long side to at most `max_ratio` times the short side, so that
    resizing the short side to the model's size costs bounded memory and time (a 1x12,000 px strip resized to
    219 px would be 219x2.6M px: +1.5 GB). Images within the ratio, every photo the bad-file check admits, come
    back as they are; beyond it, the eval transform's square centre crop sees the same pixels as without it.
    A PIL image or a C x H x W tensor (a view of it)."""
    pil = isinstance(image, Image.Image)
    width, height = image.size if pil else (image.shape[-1], image.shape[-2])
    short = max(min(width, height), 1)
    if max(width, height) <= max_ratio * short:
        return image
    long = int(max_ratio * short)
    if width > height:
        left = (width - long) // 2
        return image.crop((left, 0, left + long, height)) if pil else image[..., left:left + long]
    top = (height - long) // 2
    return image.crop((0, top, width, top + long)) if pil else image[..., top:top + long, :]


# ---- any input predict accepts ----

def _describe(image) -> str:
    if isinstance(image, (str, Path)):
        return str(image)
    if isinstance(image, np.ndarray):
        return f"array of shape {image.shape} and dtype {image.dtype}"
    return f"{type(image).__name__} input"


def _from_array(array: np.ndarray) -> Image.Image:
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] in (1, 3, 4))):
        raise ValueError("expected a uint8 array of shape HxW, HxWx3 or HxWx4")
    return Image.fromarray(array[:, :, 0] if array.ndim == 3 and array.shape[2] == 1 else array)


def load_image(image, rule: DecodeRule | None = None) -> Image.Image:
    """A path, the bytes of an image file, a PIL image or a uint8 numpy array (H x W grey, H x W x 3 RGB,
    H x W x 4 RGBA) as an RGB PIL image; a JPEG file decoded at `rule`'s scale. Raises ImageError naming the
    input, TypeError for another kind of object."""
    if image is None:
        raise ImageError("None: no image (an empty upload, or a missing item in a batch)")
    if not isinstance(image, (str, Path, bytes, bytearray, np.ndarray, Image.Image)):
        raise TypeError(f"expected a path, PIL image, bytes or numpy array, got {type(image).__name__}")
    try:
        if isinstance(image, np.ndarray):
            return to_rgb(_from_array(image))
        return open_rgb(image, rule)  # a caller's PIL image as it is: a draft would change it in place
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ... per format
        raise ImageError(f"{_describe(image)}: cannot be read as an image ({e})") from None


def load_pixels(image, rule: DecodeRule | None = None) -> torch.Tensor:
    """Any input `load_image` accepts as a 3 x H x W uint8 RGB tensor; a file or bytes through `decode`
    (TorchCodec for a JPEG decoded whole). Raises ImageError naming the input."""
    if not isinstance(image, (str, Path, bytes, bytearray)):
        return pil_to_tensor(load_image(image, rule))
    try:
        return decode(image, rule)
    except Exception as e:  # Pillow raises OSError, SyntaxError, ValueError, DecompressionBombError, ... per format
        raise ImageError(f"{_describe(image)}: cannot be read as an image ({e})") from None
