"""Classify food photos with a model written by train.py or polish.py, from a local folder or the Hub.

    from food101hf import predict, Predictor
    predict("dish.jpg", model="outputs/food101")          # [{"label": "ramen", "score": 0.93}, ...]
    predict(["a.jpg", "b.png"], model="org/name", top_k=3)  # one such list per image
    predictor = Predictor("org/name")                     # loads the model once
    predictor(images, top_k=None)                         # every class, best first
    predictor(images, errors="skip")                      # None in place of an unreadable image
    predictor.label_scores("dish.jpg")                    # {"ramen": 0.93, ...}: what gr.Label shows

    python -m food101hf.predict --model M [--top-k K] [--tta] FILES_OR_FOLDERS...   # or: food101hf-predict
        one JSON line per image on stdout; an unreadable file gets one line on stderr, and exit status 1

An image is a path, a PIL image, the bytes of an image file, or a uint8 numpy array (H x W grey, H x W x 3 RGB,
H x W x 4 RGBA). Preprocessing (size, crop, interpolation, mean, std) is the model's own pretrained_cfg, so a
polished model is served at its polished size. Hub models come through huggingface_hub's cache, so they load
offline (HF_HUB_OFFLINE=1) once fetched.
"""

from __future__ import annotations

if __name__ == "__main__":  # answer --help and refuse bad flags before torch and timm load
    from food101hf.cli import parse_early
    from food101hf.parsers import predict_parser

    parse_early(predict_parser)

import contextlib
import json
import logging
import numbers
import os
import sys
import types
from collections import defaultdict
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from timm.data import create_transform, resolve_model_data_config

from .cli import run
from .errors import ImageError, UsageError
from .folders import ignored_line, image_files
from .images import load_pixels
from .model import load_trained
from .parsers import predict_parser
from .runtime import cpu_has_native_bf16, keep_freed_memory, resolve_device, set_num_threads
from .transforms import ImageTransform, model_input

SINGLE = (str, Path, Image.Image, bytes, bytearray, np.ndarray)
ERRORS = ("raise", "skip")
logger = logging.getLogger(__name__)


def _check_count(name: str, value, none: str = "") -> None:
    """Raise UsageError naming the argument unless `value` is a positive integer (or None, when `none` says what
    None means)."""
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise UsageError(f"{name} must be a positive integer{f', or None for {none}' if none else ''}; got "
                         f"{value!r}")


def _resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype: bf16 on GPUs that have it (else fp16) and on CPUs with native bf16, where it roughly
    doubles ResNet-18 throughput; fp32 (None) elsewhere, where bf16 is emulated and slower."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None
    choices = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
    if precision not in choices:
        raise UsageError(f"precision must be 'auto' or one of {', '.join(choices)}, got {precision!r}")
    return choices[precision]


class Predictor:
    """A trained model, loaded once, with its preprocessing. Call it like `predict` (without `model=`).

    A thread pool decodes and resizes each batch (Pillow and torch release the GIL), ~1.4 ms of CPU per 512x384
    JPEG; normalisation runs once per batch on the device. See `stream` for how this overlaps the model. On a CPU
    it sets the process's glibc allocator to keep freed memory (`food101hf.runtime.keep_freed_memory`)."""

    def __init__(self, model: str | Path, device: str | torch.device | None = None, batch_size: int = 32,
                 tta: bool = False, precision: str = "auto", num_threads: int | None = None):
        # every argument is checked before the model loads: UsageError (a ValueError) naming the one that is wrong
        self.device = resolve_device(device)
        self.dtype = _resolve_precision(precision, self.device)
        _check_count("batch_size", batch_size)
        _check_count("num_threads", num_threads, none="all cores")
        if not isinstance(tta, bool):
            raise UsageError(f"tta must be True or False, got {tta!r}")
        if self.device.type == "cpu":
            keep_freed_memory()  # a third faster CPU inference: see food101hf.runtime
        self.batch_size, self.tta = batch_size, tta
        self.num_threads = num_threads or os.cpu_count() or 1
        self.model = load_trained(model).eval().to(self.device, memory_format=torch.channels_last)
        self.labels = list(self.model.pretrained_cfg["label_names"])
        self.data_config = resolve_model_data_config(self.model)
        # timm's eval transform (resize, center crop) up to a uint8 tensor; model_input normalises each batch
        # a JPEG is decoded at the smallest scale that keeps the resize's short side (the transform's rule)
        self.transform = ImageTransform(create_transform(**self.data_config, is_training=False, normalize=False))

    def autocast(self):
        return torch.autocast(self.device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()

    def preprocess(self, image) -> torch.Tensor:
        """One input as a 3xHxW uint8 tensor at the model's size (raises ImageError)."""
        return self.transform(load_pixels(image, self.transform.rule))

    @torch.inference_mode()
    def probabilities(self, pixels: torch.Tensor) -> torch.Tensor:
        """Class probabilities for a batch of uint8 images (N x 3 x H x W), averaged with the mirrored images
        under TTA."""
        x = model_input(pixels.to(self.device, non_blocking=True), self.data_config["mean"], self.data_config["std"])
        with self.autocast():
            probs = self.model(x).float().softmax(-1)
            if self.tta:
                probs = (probs + self.model(x.flip(-1)).float().softmax(-1)) / 2
        return probs.cpu()

    def _top(self, probs: torch.Tensor, top_k: int | None) -> list[dict]:
        scores, indices = probs.topk(len(self.labels) if top_k is None else min(top_k, len(self.labels)))
        return [{"label": self.labels[i], "score": s} for s, i in zip(scores.tolist(), indices.tolist())]

    def stream(self, images: Iterable, top_k: int | None = 5) -> Iterator[list[dict] | ImageError]:
        """Each image's predictions in input order, or the ImageError of an image that could not be read; the
        others are still answered. Holds at most two batches in memory."""
        _check_count("top_k", top_k, none="every class")

        def submit(pool, chunk):
            return [pool.submit(self.preprocess, image) for image in chunk]

        def answer(futures):
            done = []
            for future in futures:
                try:
                    done.append(future.result())
                except ImageError as e:
                    done.append(e)
            tensors = [t for t in done if isinstance(t, torch.Tensor)]
            probs = iter(self.probabilities(torch.stack(tensors))) if tensors else iter(())
            return [d if isinstance(d, ImageError) else self._top(next(probs), top_k) for d in done]

        iterator = iter(images)
        # On a GPU the next batch is decoded while the current one runs. On a CPU the forward already keeps every
        # core busy and decoding beside it only adds contention (0.83 vs 0.86 of model-only speed, 2 cores), so
        # all threads decode a batch, then the model runs it. Each decode thread resizes with one torch thread
        # (OpenMP thread counts are per thread: the model keeps all cores).
        ahead = self.device.type != "cpu"
        with ThreadPoolExecutor(self.num_threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            batch = submit(pool, _take(iterator, self.batch_size))
            while batch:
                following = submit(pool, _take(iterator, self.batch_size)) if ahead else None
                yield from answer(batch)
                batch = following if ahead else submit(pool, _take(iterator, self.batch_size))

    def __call__(self, images, top_k: int | None = 5, errors: str = "raise") -> list[dict] | list[list[dict] | None]:
        """One image -> a list of {"label", "score"}, best first (`top_k` of them; None: every class); a list of
        images -> one such list per image, in order.

        An input that cannot be read raises ImageError (a ValueError naming it) with errors="raise"; with
        errors="skip" the other images are still answered, the unreadable one gets None in its place, and a
        warning naming it is logged (`logging`, logger "food101hf.predict"). None as the input is a ValueError."""
        if errors not in ERRORS:
            raise UsageError(f"errors must be one of {', '.join(ERRORS)}, got {errors!r}")
        if images is None:
            raise UsageError("no image given (None): pass a path, PIL image, bytes or numpy array, or a list of "
                             "them")
        single = isinstance(images, SINGLE)
        if not single and not isinstance(images, Iterable):
            raise TypeError(f"expected a path, PIL image, bytes or numpy array, or a list of them, got "
                            f"{type(images).__name__}")
        results = []
        for result in self.stream([images] if single else images, top_k):
            if isinstance(result, ImageError):
                if errors == "raise":
                    raise result
                logger.warning(f"skipped {result}")
                result = None
            results.append(result)
        return results[0] if single else results

    def label_scores(self, images, top_k: int | None = None, errors: str = "raise") -> dict | list[dict | None]:
        """Like calling the predictor, with each image's answer as one {label: score} dict, best first (every
        class by default): the form `gradio.Label` and most apps take."""
        results = self(images, top_k, errors)
        return _as_dict(results) if isinstance(images, SINGLE) else [_as_dict(r) for r in results]


def _as_dict(predictions: list[dict] | None) -> dict[str, float] | None:
    return None if predictions is None else {p["label"]: p["score"] for p in predictions}


def _take(iterator: Iterator, n: int) -> list:
    return [item for _, item in zip(range(n), iterator)]


def predict(images, model: str | Path, top_k: int | None = 5, device: str | torch.device | None = None,
            batch_size: int = 32, tta: bool = False, errors: str = "raise"):
    """Classify one image (-> list of {"label", "score"}, best first) or a list of images (-> a list of those);
    `top_k=None` gives every class, `errors="skip"` None for an unreadable image (see `Predictor.__call__`).
    Loads `model` (a folder written by train.py/polish.py, or a Hub repo id) on each call: keep a `Predictor`
    to classify more than once."""
    return Predictor(model, device=device, batch_size=batch_size, tta=tta)(images, top_k=top_k, errors=errors)


class _CallableModule(types.ModuleType):
    """Once imported, `food101hf.predict` is this module; calling it is calling `predict`."""

    def __call__(self, *args, **kwargs):
        return predict(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule


def expand(paths: list[str], ignored: dict[str, list[Path]] | None = None) -> list[Path]:
    """Files as given (a hidden one too); folders as the images under them, sorted, by training's rules
    (food101hf.folders: hidden files and folders skipped, an image is what Pillow opens here, by extension). What a
    folder holds besides images goes to `ignored`, by reason."""
    found = []
    for path in map(Path, paths):
        found += image_files(path, ignored) if path.is_dir() else [path]
    return found


def main(argv: list[str] | None = None) -> int:
    """The command line; exit status 0 (all answered), 1 (some inputs unreadable), 2 (bad flag or model)."""
    args = predict_parser().parse_args(argv)
    threads = set_num_threads()
    if args.verbose:
        print(f"{threads.count} torch thread(s) ({threads.reason})", file=sys.stderr)
    predictor = Predictor(args.model, device=args.device, batch_size=args.batch_size, tta=args.tta,
                          precision=args.precision)
    ignored: dict[str, list[Path]] = defaultdict(list)
    files = expand(args.inputs, ignored)
    for reason, paths in ignored.items():
        print(f"note: {ignored_line(reason, list(map(str, paths)))}", file=sys.stderr)
    failed = [f"{path}: no image files in this folder" for path in map(Path, args.inputs)
              if path.is_dir() and not any(f.is_relative_to(path) for f in files)]
    for message in failed:
        print(f"error: {message}", file=sys.stderr)
    for path, result in zip(files, predictor.stream(files, args.top_k)):
        if isinstance(result, ImageError):
            failed.append(str(result))
            print(f"error: {result}", file=sys.stderr, flush=True)
        else:
            print(json.dumps({"file": str(path), "predictions": result}, ensure_ascii=False, allow_nan=False),
                  flush=True)
    return 1 if failed else 0


def console_main() -> None:
    """`python -m food101hf.predict`, and `food101hf-predict` (`food101hf.predict_command`) once its command line
    parsed."""
    run(main)


if __name__ == "__main__":
    console_main()
