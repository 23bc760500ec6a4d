import os
import platform
import subprocess
import sys

import pytest

from food101hf.runtime import keep_freed_memory


def python(code: str, **env: str) -> str:
    environment = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"} | env
    return subprocess.run([sys.executable, "-c", code], env=environment, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_food101hf_before_torch_makes_openmp_threads_sleep_when_idle():
    assert python("import food101hf, os; print(os.environ['OMP_WAIT_POLICY'])") == "PASSIVE"
    assert python("import food101hf, os; print(os.environ['OMP_WAIT_POLICY'])", OMP_WAIT_POLICY="active") == \
        "active"  # the user's choice wins
    # too late once torch is loaded: the environment is left alone and the function says it does not apply
    assert python("import torch, os; from food101hf.runtime import set_openmp_defaults; "
                  "print(set_openmp_defaults(), 'OMP_WAIT_POLICY' in os.environ)") == "False False"


FAULTS = """
import resource, sys, torch
from food101hf.runtime import keep_freed_memory
if sys.argv[1] == "keep":
    keep_freed_memory()
conv = torch.nn.Conv2d(3, 64, 7, stride=2)
x = torch.randn(8, 3, 192, 192)
for step in range(5):  # a training step's pattern: activations and gradients of a few MB, freed each step
    if step == 2:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    conv(x).sum().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
def test_the_allocator_keeps_freed_memory_on_glibc():
    assert keep_freed_memory()

    def page_faults(mode: str) -> int:
        return int(subprocess.run([sys.executable, "-c", FAULTS, mode], capture_output=True, text=True,
                                  check=True).stdout)

    # by default freed blocks go back to the OS and their pages fault in again each step (~30,000 page faults
    # in 3 steps here); kept, they are reused (~4,000)
    assert page_faults("keep") * 3 < page_faults("default")
