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


def predict_command() -> None:
    """The `food101hf-predict` console script (setup.cfg): like `python -m food101hf.predict`, it answers --help and
    refuses a bad command line (a missing file included) before torch and timm load (~5 s), then runs the command."""
    from .cli import parse_early  # here, like the import below: `import food101hf` stays light
    from .parsers import predict_parser

    parse_early(predict_parser)
    from .predict import console_main

    console_main()
