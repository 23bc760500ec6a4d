"""The decode-on-device data path (`--decode-on-device`): loader workers only read files and draw each sample's
crop box and flip; the training process decodes the whole batch on its device (batched nvJPEG through TorchCodec
on a GPU) and crops, resizes, flips and normalises all of it in one batched step there.

Why: on a GPU, ResNet-18's step at 192 px outruns what CPU workers can decode and crop (~1.6 ms of CPU per image
per worker: ~9,000 img/s from 14 workers at best). Here a worker spends ~0.1 ms per image (read the file, parse its
header). A JPEG large enough to decode reduced (`images.DecodeRule`: a 12 MP phone photo at 1/4 for training at
192 px) is the exception: nvJPEG, like TorchCodec on the CPU, decodes only whole images, so it would decode 16x
the pixels the crop keeps; the worker decodes it reduced with Pillow's draft and hands over the pixels.
Status: tested on the CPU (the same code with device="cpu"), not yet measured on a GPU; opt-in until a device check
(benchmarks/device_check.py) has passed.

The crop is timm's RandomResizedCrop (scale, ratio and flip probability from the training transform timm builds)
drawn with torchvision's `RandomResizedCrop.get_params` inside the per-sample seed of `loaders.SeededAugmentation`, so
exact resume stays exact; evaluation uses timm's centre crop (resize to size / crop_pct, crop size) as a box. The
resize is `torchvision.ops.roi_align` with adaptive sampling: bilinear when enlarging, an average over each output
pixel's footprint when shrinking (an antialiased resize), per image in one call for the batch; torchvision's v2
transforms on a batch would apply one crop to all of it (pytorch/vision#8484).
"""

from __future__ import annotations

import io
import math
from concurrent.futures import ThreadPoolExecutor

import torch
from PIL import Image
from timm.data.transforms import RandomResizedCropAndInterpolation
from torchvision import transforms
from torchvision.ops import roi_align
from torchvision.transforms.functional import pil_to_tensor

from . import images as decoding

PRECISION_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}  # Accelerate's names; anything else: float32


class EncodedSamples(torch.utils.data.Dataset):
    """What a worker hands over per sample: the encoded JPEG (bytes) when it is decoded whole, else (a JPEG `rule`
    lets decode reduced, another format, no TorchCodec) the image decoded by Pillow (3 x H x W uint8); its upright
    (height, width) as decoded; the crop box (top, left, height, width in those pixels); the flip; the label.
    `dataset` has an Image(decode=False) column; `rule` is the transform's (`transforms.decode_rule`)."""

    def __init__(self, dataset, image_column: str, label_column: str, crop: RandomResizedCropAndInterpolation |
                 None, hflip: float, image_size: int, crop_pct: float, rule: decoding.DecodeRule | None = None):
        self.dataset, self.image_column, self.label_column = dataset, image_column, label_column
        self.crop, self.hflip, self.image_size, self.crop_pct, self.rule = crop, hflip, image_size, crop_pct, rule

    def __len__(self) -> int:
        return len(self.dataset)

    def with_format(self, type=None):  # noqa: A002  datasets' name
        """The underlying rows (undecoded images, labels), as `report.write_report` reads an eval loader's."""
        return self.dataset.with_format(type)

    def box(self, height: int, width: int) -> tuple[float, float, float, float]:
        """Training: a RandomResizedCrop box from torch's generator (seeded per sample by SeededAugmentation).
        Evaluation: timm's centre crop, the square of side image_size / (image_size / crop_pct) of the short side."""
        if self.crop is not None:
            shape_only = torch.empty(()).expand(1, height, width)  # get_params reads the size, nothing else
            return tuple(float(v) for v in transforms.RandomResizedCrop.get_params(shape_only, self.crop.scale,
                                                                                 self.crop.ratio))
        side = min(height, width) * self.image_size / math.floor(self.image_size / self.crop_pct)
        return (height - side) / 2, (width - side) / 2, side, side

    def __getitem__(self, index: int) -> dict:
        row = self.dataset[index]
        data = decoding.read_encoded(row[self.image_column])
        with Image.open(io.BytesIO(data)) as image:
            whole = decoding.reduce(image, self.rule) == 1  # a reduced JPEG is set to decode so (Pillow's draft)
            if whole and image.format == "JPEG" and decoding.decode_jpeg is not None:
                pixels, (height, width) = data, decoding.upright_size(image)
            else:
                pixels = pil_to_tensor(decoding.open_rgb(image))
                height, width = pixels.shape[-2:]
        flip = self.crop is not None and self.hflip > 0 and bool(torch.rand(1) < self.hflip)
        return {"image": pixels, "size": (height, width), "box": self.box(height, width), "flip": flip,
                "label": row[self.label_column]}


def collate_encoded(samples: list[dict]) -> dict:
    """A batch of EncodedSamples: images stay a list (bytes or tensors of different sizes), the rest stacks."""
    return {"images": [s["image"] for s in samples], "sizes": [s["size"] for s in samples],
            "boxes": torch.tensor([s["box"] for s in samples], dtype=torch.float32),
            "flips": torch.tensor([s["flip"] for s in samples]),
            "label": torch.tensor([s["label"] for s in samples])}


def decode_batch(images: list, sizes: list[tuple[int, int]], device: torch.device) -> list[torch.Tensor]:
    """Every image of a batch as a 3 x H x W uint8 tensor on `device`: the encoded ones in one TorchCodec call
    (one batched nvJPEG call on CUDA); any it rejects, or decodes to another size than the header said (EXIF),
    one by one through `images.decode` (Pillow's fallback) on the CPU."""
    out = [None if isinstance(image, (bytes, bytearray)) else image.to(device, non_blocking=True)
           for image in images]
    encoded = [i for i, image in enumerate(out) if image is None]
    try:
        decoded = decoding.decode_jpeg([images[i] for i in encoded], device=device) if encoded else []
    except RuntimeError:  # one bad JPEG fails the whole call
        decoded = [None] * len(encoded)
    for i, pixels in zip(encoded, decoded):
        if pixels is None or tuple(pixels.shape[-2:]) != tuple(sizes[i]):
            pixels = decoding.decode(images[i]).to(device)
        out[i] = pixels
    return out


def crop_resize_flip(images: list[torch.Tensor], boxes: torch.Tensor, flips: torch.Tensor,
                     size: int) -> torch.Tensor:
    """Each image's box (top, left, height, width) resized to size x size, mirrored where `flips`, as one float
    batch N x 3 x size x size in 0-255 (one roi_align over the images padded to the batch's largest size)."""
    height, width = max(i.shape[-2] for i in images), max(i.shape[-1] for i in images)
    # edge pixels repeated into the padding: a sample at a box's edge then blends with the image, not with zeros
    padded = torch.cat([torch.nn.functional.pad(image[None].float(), (0, width - image.shape[-1], 0,
                                                                     height - image.shape[-2]), mode="replicate")
                        for image in images])
    top, left, box_h, box_w = boxes.to(padded.device).unbind(1)
    rois = torch.stack([torch.arange(len(images), device=padded.device, dtype=torch.float32), left, top,
                        left + box_w, top + box_h], 1)
    x = roi_align(padded, rois, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True)
    return torch.where(flips.to(x.device).view(-1, 1, 1, 1), x.flip(-1), x)


class DeviceBatchTransform:
    """Decode, crop/resize/flip and normalise a `collate_encoded` batch on `device`: N x 3 x S x S in `dtype`
    (bf16 under bf16 mixed precision), channels_last: what `data.model_input` would give."""

    def __init__(self, image_size: int, mean, std, device: torch.device, dtype: torch.dtype = torch.float32):
        self.image_size, self.device, self.dtype = image_size, torch.device(device), dtype
        self.mean = torch.tensor(mean, device=self.device).view(1, -1, 1, 1) * 255
        self.std = torch.tensor(std, device=self.device).view(1, -1, 1, 1) * 255

    def __call__(self, batch: dict) -> dict:
        images = decode_batch(batch["images"], batch["sizes"], self.device)
        x = crop_resize_flip(images, batch["boxes"], batch["flips"], self.image_size)
        x = x.sub_(self.mean).div_(self.std).to(self.dtype).contiguous(memory_format=torch.channels_last)
        return {"pixel_values": x, "label": batch["label"].to(self.device, non_blocking=True)}


def device_batches(loader, accelerator, mean, std):
    """The batches of `loader` as the model takes them. A loader of `collate_encoded` batches is decoded and
    transformed on the accelerator's device one batch ahead, in a thread (its own CUDA stream on a GPU) while the
    current batch trains; any other loader is returned as it is.

    Accelerate marks the last batch of a prepared loader (`end_of_dataloader`, which `accumulate` and the
    checkpointing read) as it hands it out; fetching ahead would mark the one before it. So each batch's mark is
    recorded as it is fetched and set back when the batch is handed on, and nothing past the last batch is
    fetched before the loop is done with it."""
    if getattr(loader, "collate_fn", None) is not collate_encoded:
        return loader
    dataset = loader.dataset
    while not isinstance(dataset, EncodedSamples):
        dataset = dataset.dataset  # through data.SeededAugmentation
    transform = DeviceBatchTransform(dataset.image_size, mean, std, accelerator.device,
                                     PRECISION_DTYPES.get(accelerator.mixed_precision, torch.float32))
    return _ahead(loader, transform)


def _ahead(loader, transform: DeviceBatchTransform):
    cuda = transform.device.type == "cuda"
    stream = torch.cuda.Stream(transform.device) if cuda else None

    def run(batch):
        if not cuda:
            return transform(batch), None
        with torch.cuda.stream(stream):
            out = transform(batch)
            ready = torch.cuda.Event()
            ready.record(stream)
        return out, ready

    def flag() -> bool:
        return bool(getattr(loader, "end_of_dataloader", False))

    iterator = iter(loader)
    with ThreadPoolExecutor(1) as pool:
        batch = next(iterator, None)
        pending, last = (pool.submit(run, batch), flag()) if batch is not None else (None, True)
        while pending is not None:
            following, following_last = None, True
            if not last:
                batch = next(iterator, None)
                if batch is not None:
                    following, following_last = pool.submit(run, batch), flag()
            out, ready = pending.result()
            if ready is not None:
                torch.cuda.current_stream(transform.device).wait_event(ready)
                for tensor in out.values():
                    tensor.record_stream(torch.cuda.current_stream(transform.device))
            if hasattr(loader, "end_of_dataloader"):
                loader.end_of_dataloader = last
            yield out
            pending, last = following, following_last
        next(iterator, None)  # let the loader finish its epoch (Accelerate's bookkeeping)
