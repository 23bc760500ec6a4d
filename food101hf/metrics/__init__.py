"""`evaluate` metric modules shipped with the package, loadable offline by path."""

from pathlib import Path

TOPK_ACCURACY = str(Path(__file__).with_name("topk_accuracy.py"))
