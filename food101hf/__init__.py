"""food101hf: fine-tune timm's ResNet-18 on Food-101 (or your own food photos) with the Hugging Face stack."""

import importlib

from .runtime import set_openmp_defaults

__version__ = "0.1.0"

set_openmp_defaults()  # OpenMP reads its settings when torch loads it, so before anything imports torch


def __getattr__(name: str):
    """`food101hf.predict(...)` and `food101hf.Predictor`, imported on first use so `import food101hf` stays light
    (no torch). `food101hf.predict` is the module food101hf/predict.py, which is callable as the function."""
    if name in ("predict", "Predictor"):
        module = importlib.import_module(".predict", __name__)
        return module if name == "predict" else module.Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
