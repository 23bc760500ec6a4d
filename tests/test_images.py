"""food101hf.images: TorchCodec for JPEGs, Pillow for the rest and for TorchCodec's rejects, same pixels, same
errors; every image mode as 8-bit RGB."""

import io

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.functional import pil_to_tensor

from conftest import plant_bad_files, plant_odd_images, write_image_folder
from food101hf import images as decode_module
from food101hf.images import decode, open_rgb, read_encoded, to_rgb, upright_size

pytestmark = pytest.mark.skipif(decode_module.decode_jpeg is None, reason="torchcodec is not installed")


def pillow(path) -> torch.Tensor:
    return pil_to_tensor(to_rgb(Image.open(path)))


@pytest.fixture
def counted(monkeypatch):
    """Count TorchCodec's decodes."""
    calls = []
    real = decode_module.decode_jpeg

    def counting(data, *args, **kwargs):
        calls.append(len(data))
        return real(data, *args, **kwargs)

    monkeypatch.setattr(decode_module, "decode_jpeg", counting)
    return calls


def test_jpegs_decode_with_torchcodec_to_pillows_pixels(tmp_path, counted):
    folder = write_image_folder(tmp_path, ["a"], per_class=3, size=(64, 48))
    odd = plant_odd_images(folder / "a")
    files = sorted((folder / "a").iterdir())
    for path in files:
        pixels = decode(str(path))
        expected = pillow(path)
        assert pixels.dtype == torch.uint8 and pixels.shape == expected.shape, path.name  # rotated.jpg: EXIF applied
        assert (pixels.int() - expected.int()).abs().max() <= 2, path.name
        assert torch.equal(decode({"bytes": None, "path": str(path)}), pixels)
        assert torch.equal(decode(path.read_bytes()), pixels)
    jpegs = [p for p in files if p.suffix == ".jpg"]
    assert len(counted) == 3 * len(jpegs)  # every JPEG (grey, CMYK, EXIF-rotated too) went through TorchCodec
    assert "rotated.jpg" in odd and upright_size(Image.open(folder / "a" / "rotated.jpg")) == (48, 40)


def test_a_jpeg_torchcodec_rejects_falls_back_to_pillow(tmp_path, monkeypatch):
    path = write_image_folder(tmp_path, ["a"], per_class=1) / "a" / "0.jpg"

    def refuse(data, *args, **kwargs):
        raise RuntimeError("unsupported marker")

    monkeypatch.setattr(decode_module, "decode_jpeg", refuse)
    assert torch.equal(decode(str(path)), pillow(path))


def test_unreadable_files_fail_as_they_do_with_pillow(tmp_path):
    folder = write_image_folder(tmp_path, ["a"], per_class=1)
    for name in plant_bad_files(folder / "a"):
        with pytest.raises(Exception) as ours:
            decode(str(folder / "a" / name))
        with pytest.raises(Exception) as theirs:
            pillow(folder / "a" / name)
        assert type(ours.value) is type(theirs.value), name
        assert name in str(ours.value) or "truncated" in str(ours.value) or name == "bomb.png", (name, ours.value)


def test_a_large_jpeg_decodes_at_a_reduced_size_when_that_is_enough(tmp_path, counted):
    path = tmp_path / "big.jpg"
    Image.fromarray(np.full((1200, 1600, 3), 90, np.uint8)).save(path)
    assert decode(str(path), min_size=235).shape == (3, 300, 400)  # Pillow's draft, 1/4 scale
    assert counted == []
    assert decode(str(path), min_size=700).shape == (3, 1200, 1600)  # too small a reduction: TorchCodec
    assert len(counted) == 1


def test_open_rgb_and_read_encoded(tmp_path):
    path = write_image_folder(tmp_path, ["a"], per_class=1) / "a" / "0.jpg"
    assert read_encoded({"bytes": None, "path": str(path)}) == path.read_bytes() == read_encoded(path)
    image = open_rgb({"bytes": path.read_bytes(), "path": None})
    assert image.mode == "RGB" and image.size == (40, 32)
    assert open_rgb(image) is image


def test_decoded_tensors_get_the_same_bounded_aspect_ratio_as_pil_images():
    from food101hf.images import MAX_ASPECT_RATIO, bound_aspect_ratio

    for size in ((int(MAX_ASPECT_RATIO * 10) + 50, 10), (10, int(MAX_ASPECT_RATIO * 10) + 50), (30, 20)):
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))
        expected = pil_to_tensor(bound_aspect_ratio(image))
        assert torch.equal(bound_aspect_ratio(pil_to_tensor(image)), expected), size


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
