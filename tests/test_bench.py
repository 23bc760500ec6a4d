"""The benchmark tool runs every section and prints every figure and ratio: one round on the smallest inputs it
takes (a smoke run, marked slow: its e2e section launches train.py twice). No timing is asserted."""

import re

import pytest

from conftest import run_script

pytestmark = pytest.mark.slow


def test_bench_runs_every_section_and_prints_the_ratios():
    # 100 training images: 10 a class and, a tenth of that, 1 a class to validate and predict on
    result = run_script("benchmarks/bench.py", "--train-images", "100", "--batch-size", "8", "--image-size", "32",
                        "--steps", "1", "--rounds", "1", "--num-workers", "0", timeout=900)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("machine: ")
    for name in ("model", "e2e", "whole process s", "model-only s", "data", "data, Pillow", "naive",
                 "naive epoch s", "predict API", "model inference", "single image ms"):
        assert re.search(rf"^ *{name}: +\d+\.\d", out, re.M), name
    for ratio in ("e2e / model-only", "whole process / model-only time", "ours / naive, per training step",
                  "naive epoch / our whole process", "data path, TorchCodec / Pillow",
                  "predict API / model-only inference"):
        assert re.search(rf"^{re.escape(ratio)}: \d+\.\d\d  \(rounds: \d+\.\d\d\)", out, re.M), ratio  # one round
