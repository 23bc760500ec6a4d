"""What the process should know and set about the machine before any tensor work; light imports only (no
torch: `set_openmp_defaults` must run before torch is imported, and runs on `import food101hf`)."""

from __future__ import annotations

import ctypes
import os
import platform
import sys
from functools import cache
from pathlib import Path

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def set_openmp_defaults() -> bool:
    """OMP_WAIT_POLICY=PASSIVE unless the environment says otherwise: an OpenMP thread that finishes its share of
    an op sleeps instead of spinning for the next one. On a 2-core CPU, torch's two compute threads then leave the
    cores to the data loader workers between ops instead of fighting them for it: one epoch of the benchmark
    trained at 83-85 img/s instead of 75-79 (model-only speed changes within noise). OpenMP reads the setting
    once, when torch loads it, so this runs on `import food101hf` and is a no-op once torch is imported.
    Returns whether the setting applies to this process."""
    if "torch" in sys.modules:
        return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    return os.environ["OMP_WAIT_POLICY"].upper() == "PASSIVE"


def cpu_has_native_bf16() -> bool:
    """AVX-512 BF16 or AMX: bf16 autocast then roughly doubles training speed; elsewhere it is emulated and slow."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return " avx512_bf16" in flags or " amx_bf16" in flags


@cache
def keep_freed_memory() -> bool:
    """Let glibc keep freed memory for reuse instead of returning it to the OS after every tensor.

    By default glibc serves each allocation over 128 KB (a conv activation, a gradient) with a fresh mmap and
    unmaps it on free, so every training step page-faults its activations in again: on a 2-core CPU that was a
    third of the run's CPU time in the kernel and ResNet-18 trained at 65 img/s instead of 95 (inference 140
    instead of 190 img/s). glibc raises that threshold on its own as big blocks are freed, which made speed
    depend on allocation history. This fixes it at the maximum (32 MB), stops trimming the heap and grows it 1 GB
    at a time (address space; pages are only backed once touched), so that larger blocks (a batch-32 stem
    activation is 38 MB) come from the heap too: the same as MALLOC_MMAP_THRESHOLD_, MALLOC_TRIM_THRESHOLD_ and
    MALLOC_TOP_PAD_ in the environment. The cost: the process keeps its peak memory. DataLoader workers forked
    afterwards inherit it. A no-op off glibc; once per process. Returns whether it was applied."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL("libc.so.6")
    return all(libc.mallopt(param, value) == 1 for param, value in (
        (M_MMAP_THRESHOLD, 32 << 20), (M_TRIM_THRESHOLD, 2**31 - 1), (M_TOP_PAD, 1 << 30)))


def describe_hardware(device, num_processes: int = 1) -> str:
    """What a run computed on, for metrics.json and the model card: e.g. '1 x NVIDIA H100 80GB HBM3' or
    '2 x CPU process (AMD EPYC 9454P, 2 threads each)'. `device` is a torch.device (no torch import here)."""
    if device.type == "cuda":
        import torch

        return f"{num_processes} x {torch.cuda.get_device_name(device)}"
    try:
        model = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                     if line.startswith("model name"))
    except (OSError, StopIteration):
        model = platform.processor() or platform.machine()
    import torch

    threads = torch.get_num_threads()
    return f"{num_processes} x {device.type.upper()} process ({model}, {threads} thread{'s' * (threads != 1)} each)"
