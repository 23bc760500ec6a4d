"""The benchmark command runs every section, on both data sets, and prints every ratio (marked slow: ~1.5 min). No
timing is asserted."""

import re

import pytest

from conftest import run_script

pytestmark = pytest.mark.slow


def test_bench_runs_every_section_and_prints_the_ratios():
    result = run_script("benchmarks/bench.py", "--train-images", "200", "--phone-images", "8", "--batch-size", "8",
                        "--image-size", "64", "--steps", "1", "--rounds", "2", "--num-workers", "1", timeout=900)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.startswith("machine: ")
    assert "8 phone photos (mean 2." in out  # ~2.3 MB each
    for name in ("model", "e2e", "whole process s", "model-only s", "e2e, phone", "whole process, phone s", "data",
                 "data, Pillow", "check", "check, whole", "data, phone", "data, phone whole", "check, phone",
                 "check, phone whole", "naive", "naive epoch s", "predict API", "model inference",
                 "single image ms"):
        assert re.search(rf"^ *{name}: +\d+\.\d", out, re.M), name
    for ratio in ("e2e / model-only", "whole process / model-only time", "ours / naive, per training step",
                  "naive epoch / our whole process", "data path, TorchCodec / Pillow", "epoch, phone / Food-101-sized",
                  "data path, phone: reduced / whole decode", "bad-file check: ours / whole decode",
                  "bad-file check, phone: ours / whole decode", "predict API / model-only inference"):
        assert re.search(rf"^{re.escape(ratio)}: \d+\.\d\d  \(rounds: \d+\.\d\d, \d+\.\d\d\)", out, re.M), ratio
