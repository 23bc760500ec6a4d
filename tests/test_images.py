"""food101hf.images: TorchCodec for JPEGs, Pillow for the rest and for TorchCodec's rejects, same pixels, same
errors; every image mode as 8-bit RGB."""

import io

import numpy as np
import pytest
import torch
from PIL import ExifTags, Image
from PIL.JpegImagePlugin import JpegImageFile
from torchvision.transforms import RandomResizedCrop, v2
from torchvision.transforms.functional import pil_to_tensor

from conftest import DATA_CONFIG, plant_bad_files, plant_odd_images, smooth_photo, write_image_folder
from food101hf import images as decode_module
from food101hf.config import TrainConfig
from food101hf.images import DecodeRule, check_image, decode, open_rgb, read_encoded, to_rgb, upright_size
from food101hf.transforms import build_transform

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
    assert decode(str(path), DecodeRule(short_side=235)).shape == (3, 300, 400)  # Pillow's draft, 1/4 scale
    assert counted == []
    assert decode(str(path), DecodeRule(short_side=700)).shape == (3, 1200, 1600)  # 1/2 is too small: TorchCodec
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


# ---- the decode rule: each JPEG at the smallest scale that keeps what its transform uses ----

TRAIN_192 = build_transform(DATA_CONFIG, 192, True, TrainConfig()).rule  # the recipe's RandomResizedCrop
EVAL_192 = build_transform(DATA_CONFIG, 192, False).rule  # resize the short side to floor(192 / 0.95) = 202
EVAL_224 = build_transform(DATA_CONFIG, 224, False).rule  # polish and predict: 235


@pytest.fixture(scope="module")
def phone(tmp_path_factory):
    return smooth_photo(tmp_path_factory.mktemp("phone") / "phone.jpg")


@pytest.fixture
def drafts(monkeypatch):
    """The scale of every reduced decode Pillow is asked for."""
    scales = []
    real = JpegImageFile.draft

    def recording(self, mode, size):
        scales.append(self.size[0] // size[0])
        return real(self, mode, size)

    monkeypatch.setattr(JpegImageFile, "draft", recording)
    return scales


def test_the_rule_is_read_from_timms_transforms():
    assert TRAIN_192 == DecodeRule(crop_size=192, crop_scale=0.08, crop_ratio=(3 / 4, 4 / 3))
    assert (EVAL_192, EVAL_224) == (DecodeRule(short_side=202), DecodeRule(short_side=235))


@pytest.mark.parametrize("size, train", [((4032, 3024), 4), ((3024, 4032), 4), ((4000, 2250), 2), ((3000, 3000), 2)])
def test_phone_photos_decode_reduced_for_training_and_at_an_eighth_for_evaluation(size, train):
    # 12 MP 4:3 at 1/4 (1008 x 756); 9 MP 16:9 and square at 1/2: at 1/4 their smallest crops would be 184 px
    assert TRAIN_192.reduction(*size) == train
    assert EVAL_192.reduction(*size) == EVAL_224.reduction(*size) == 8


@pytest.mark.parametrize("size", [(512, 384), (384, 512), (512, 340), (512, 512), (300, 200)])
def test_food101_sized_photos_are_trained_on_whole(size):
    assert TRAIN_192.reduction(*size) == 1
    if max(size) / min(size) >= 4 / 3:  # a 4:3 or wider Food-101 photo is also evaluated whole at 192 and 224
        assert EVAL_192.reduction(*size) == EVAL_224.reduction(*size) == 1


def test_the_scale_keeps_every_crop_at_least_the_size_it_is_resized_to_and_the_next_would_not():
    """The derivation in DecodeRule's docstring, checked against torchvision's own crop sampler: its smallest,
    most elongated crops (area 8%, ratio 3:4 or 4:3) at the chosen scale and one step smaller."""
    def smallest_crop_side(width: int, height: int) -> int:
        shape = torch.empty(()).expand(1, height, width)
        return min(min(RandomResizedCrop.get_params(shape, [0.08, 0.08], [ratio, ratio])[2:])
                   for ratio in (3 / 4, 4 / 3))

    for size in ((4032, 3024), (3024, 4032), (4000, 2250), (3000, 3000), (1600, 1200), (1000, 1000)):
        factor = TRAIN_192.reduction(*size)
        assert smallest_crop_side(-(-size[0] // factor), -(-size[1] // factor)) >= 192, size
        smaller = 2 * factor
        assert smallest_crop_side(-(-size[0] // smaller), -(-size[1] // smaller)) < 192, size
        short = min(-(-size[0] // EVAL_192.reduction(*size)), -(-size[1] // EVAL_192.reduction(*size)))
        assert short >= 202, size
        assert EVAL_192.reduction(*size) == 8 or short // 2 < 202, size


def test_where_no_reduction_applies_the_pixels_are_bitwise_those_of_a_whole_decode(tmp_path, counted, drafts):
    for size in ((512, 384), (384, 512), (512, 340)):
        path = smooth_photo(tmp_path / f"{size}.jpg", size)
        whole = decode(str(path))
        for rule in (TRAIN_192, EVAL_192, EVAL_224):
            assert torch.equal(decode(str(path), rule), whole)
            assert torch.equal(pil_to_tensor(open_rgb(str(path), rule)), pillow(path))
    assert drafts == [] and len(counted) == 3 * 4  # TorchCodec, as without a rule


def test_a_phone_photo_decodes_reduced_to_what_a_whole_decode_resized_would_give(phone, counted, drafts):
    reduced = decode(str(phone), TRAIN_192)
    assert reduced.shape == (3, 756, 1008) and drafts == [4] and counted == []  # Pillow's draft, not TorchCodec
    resized = v2.functional.resize(decode(str(phone)), [756, 1008], antialias=True)
    assert (reduced.float() - resized.float()).abs().mean() < 1.0  # grey levels
    assert decode(str(phone), EVAL_224).shape == (3, 378, 504)
    assert open_rgb(str(phone), TRAIN_192).size == (1008, 756)


def test_a_square_food101_photo_is_evaluated_from_half_its_size_within_a_grey_level(tmp_path, drafts):
    """The one Food-101 shape the rule reduces: 512x512 has a 256 px short side at 1/2, above 202 and 235."""
    path = smooth_photo(tmp_path / "square.jpg", (512, 512))
    for size, rule in ((192, EVAL_192), (224, EVAL_224)):
        transform = build_transform(DATA_CONFIG, size, False, normalize=False)
        reduced, whole = transform(decode(str(path), rule)), transform(decode(str(path)))
        assert reduced.shape == whole.shape == (3, size, size)
        assert (reduced.float() - whole.float()).abs().mean() < 1.0
    assert drafts == [2, 2]


@pytest.mark.parametrize("form", ["exif-rotated", "progressive", "mpo", "grey"])
def test_phone_photos_in_every_form_decode_reduced(tmp_path, form, drafts):
    path = tmp_path / "photo.jpg"
    if form == "exif-rotated":
        exif = Image.new("RGB", (1, 1)).getexif()
        exif[ExifTags.Base.Orientation] = 6  # stored landscape, shown portrait
        smooth_photo(path, exif=exif)
    elif form == "progressive":
        smooth_photo(path, progressive=True)
    elif form == "mpo":  # a JPEG with a second picture after it, as some phones save
        first = Image.open(smooth_photo(tmp_path / "first.jpg"))
        first.save(path, "MPO", save_all=True, append_images=[Image.new("RGB", (640, 480))])
        assert Image.open(path).format == "MPO"
    else:
        Image.open(smooth_photo(tmp_path / "colour.jpg")).convert("L").save(path)
    expected = (3, 1008, 756) if form == "exif-rotated" else (3, 756, 1008)
    assert decode(str(path), TRAIN_192).shape == expected and drafts == [4]


def test_the_bad_file_check_decodes_at_an_eighth_reports_the_stored_size_and_still_catches_truncation(phone,
                                                                                                      drafts):
    assert check_image(str(phone)) == ("RGB", (4032, 3024)) and drafts == [8]
    data = phone.read_bytes()
    for cut in (len(data) // 3, len(data) - 100, len(data) - 2):
        with pytest.raises(OSError, match="truncated"):
            check_image(data[:cut])
