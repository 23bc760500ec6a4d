"""What the process should know and set about the machine before any tensor work; light imports only (no
torch at import: `set_openmp_defaults` must run before torch is imported, and runs on `import food101hf`)."""

from __future__ import annotations

import ctypes
import os
import platform
import shlex
import sys
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from .errors import UsageError

# glibc mallopt parameters (malloc.h)
M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3


def set_openmp_defaults() -> bool:
    """OMP_WAIT_POLICY=PASSIVE unless the environment says otherwise: an OpenMP thread that finishes its share of
    an op sleeps instead of spinning for the next one. On a 2-core CPU, torch's two compute threads then leave the
    cores to the data loader workers between ops instead of fighting them for it: one epoch of the benchmark
    trained at 83-85 img/s instead of 75-79 (model-only speed changes within noise). OpenMP reads the setting
    once, when torch loads it, so this runs on `import food101hf` and is a no-op once torch is imported.
    Returns whether the setting applies to this process.

    Also, before torch loads, a launcher's default OMP_NUM_THREADS is replaced by `resolve_threads`'s count in the
    environment, so torch starts with it (see `set_num_threads` for why not later)."""
    if "torch" in sys.modules:
        return os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE"
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # only a launcher sets a default to replace; without one, psutil (~0.1 s to import) stays off the way to --help
    if any(marker in os.environ for marker in LAUNCHER_MARKERS) and (threads := resolve_threads()).launcher_default:
        os.environ["OMP_NUM_THREADS"] = str(threads.count)
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


# Environment variables only the launchers set in the processes they start (accelerate's launch_command_parser
# sets ACCELERATE_DYNAMO_BACKEND for every launch mode; torchrun's agent sets TORCHELASTIC_RUN_ID).
LAUNCHER_MARKERS = ("ACCELERATE_DYNAMO_BACKEND", "TORCHELASTIC_RUN_ID")
THREADS_FLAG = "--num_cpu_threads_per_process"  # accelerate launch's flag


@dataclass(frozen=True)
class Threads:
    count: int  # torch intra-op threads for this process
    reason: str  # where the count comes from, for the log
    launcher_default: bool = False  # the count replaces an OMP_NUM_THREADS a launcher chose on its own


def devices_here() -> list[str]:
    """The devices this machine has: the CPU and each device of torch's accelerator (CUDA, MPS, XPU...)."""
    import torch  # not at import: see this module's docstring

    if not torch.accelerator.is_available():
        return ["cpu"]
    kind = torch.accelerator.current_accelerator().type
    return ["cpu"] + [f"{kind}:{index}" for index in range(torch.accelerator.device_count())]


def resolve_device(device):
    """`device` (a name such as 'cuda:1', an index, a torch.device; None: cuda if available, else cpu) as a
    torch.device; raises UsageError, listing `devices_here`, for a name torch does not know ('gpu') or a device
    this machine lacks ('cuda' without a GPU)."""
    import torch

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    here = devices_here()
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise UsageError(f"device {device!r} is not a torch device name (e.g. cpu, cuda, cuda:1, mps); devices "
                         f"here: {', '.join(here)}") from None
    if resolved.type != "cpu" and f"{resolved.type}:{resolved.index or 0}" not in here:
        raise UsageError(f"device {device!r} is not present on this machine; devices here: {', '.join(here)}")
    return resolved


def usable_cores() -> int:
    """Physical cores this process may run on: its CPU affinity (taskset, cgroups' cpusets), without the
    hyperthread siblings torch's own default leaves out too."""
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        import psutil  # a dependency of accelerate

        physical = psutil.cpu_count(logical=False) or available
    except ImportError:
        physical = available
    return max(1, min(available, physical))


def _launcher_start(pid: int) -> tuple[dict[str, str], list[str]] | None:
    """The environment a process was started with and its command line, from /proc (Linux): what the user gave
    the launcher, before the launcher added its own defaults to its environment (/proc/PID/environ is the
    execve-time environment; later changes in the process do not show there). None where unreadable."""
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    env = dict(item.decode(errors="replace").split("=", 1) for item in environ if b"=" in item)
    return env, [arg.decode(errors="replace") for arg in cmdline if arg]


def resolve_threads(environ: dict[str, str] | None = None, parent_pid: int | None = None) -> Threads:
    """The torch thread count for this process: the user's explicit choice if there is one, else the usable cores
    shared evenly by the training processes on this machine (LOCAL_WORLD_SIZE, set by torchrun and accelerate).

    An OMP_NUM_THREADS the user set wins, whether in this process's environment (`OMP_NUM_THREADS=4 python
    train.py`) or given to a launcher (`OMP_NUM_THREADS=4 accelerate launch ...`,
    `accelerate launch --num_cpu_threads_per_process 4 ...`). A launcher's own default does not: `accelerate
    launch` exports OMP_NUM_THREADS=1 whenever its config's use_cpu is false and neither of those was given
    (accelerate/commands/launch.py, `_validate_launch_command`), and torchrun exports 1 when it starts more than
    one process (torch/distributed/run.py); both left a 2-core CPU computing on one core. The two are told
    apart by looking at the launcher process (our parent): its start-up environment and command line show what
    the user gave it. Where that cannot be read (no /proc), the value is kept."""
    environ = os.environ if environ is None else environ
    local_processes = max(1, int(environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    cores = usable_cores()
    share = Threads(max(1, cores // local_processes),
                    f"{cores} usable core(s) / {local_processes} process(es) on this machine")
    value = environ.get("OMP_NUM_THREADS", "").strip()
    if not value.isdigit() or int(value) < 1:
        return share
    launcher = next((marker for marker in LAUNCHER_MARKERS if marker in environ), None)
    if launcher is None:
        return Threads(int(value), "OMP_NUM_THREADS set by you")
    started = _launcher_start(os.getppid() if parent_pid is None else parent_pid)
    if started is None:
        return Threads(int(value), "OMP_NUM_THREADS from the launcher (its own settings unreadable: kept)")
    launcher_env, launcher_args = started
    if "OMP_NUM_THREADS" in launcher_env or any(arg.startswith(THREADS_FLAG[:len("--num_cpu_threads")])
                                                for arg in launcher_args):
        return Threads(int(value), "OMP_NUM_THREADS / --num_cpu_threads_per_process given to the launcher")
    if int(value) == share.count:  # the launcher's default happens to be the share: nothing to replace or say
        return share
    name = "accelerate launch" if launcher == "ACCELERATE_DYNAMO_BACKEND" else "torchrun"
    return Threads(share.count, f"{share.reason}; {name}'s default OMP_NUM_THREADS={value} overridden", True)


def launcher_command(script: str, launcher_args: list[str] | None = None) -> str:
    """How to start `script` (e.g. 'polish.py') the way this process was started, for the next steps a run prints:
    `python polish.py` without a launcher; under `accelerate launch` or `torchrun`, the launcher's command line up
    to our own script (`accelerate launch --config_file X polish.py`, `torchrun --nproc_per_node 2 polish.py`),
    read from the launcher process (`launcher_args`: its command line, for tests). `script` sits beside ours, as
    ours was given. Where the launcher's command line cannot be read: `python`."""
    ours = Path(sys.argv[0])
    script = str(ours.with_name(script))
    if launcher_args is None and any(marker in os.environ for marker in LAUNCHER_MARKERS):
        launcher_args = (_launcher_start(os.getppid()) or ({}, []))[1]
    at = next((i for i, arg in enumerate(launcher_args or []) if i and arg == sys.argv[0]), None)
    if at is None:
        return shlex.join(["python", script])
    prefix = launcher_args[:at]
    if len(prefix) > 1 and not prefix[1].startswith("-"):  # an interpreter running the launcher's script
        prefix = prefix[1:]
    program = Path(prefix[0]).name
    return shlex.join(["python" if program.startswith("python") else program, *prefix[1:], script])


def set_num_threads() -> Threads:
    """Apply `resolve_threads` to torch (intra-op threads of this process); the entry points call it first and
    log the result. Usually torch already runs with that count, from the environment `set_openmp_defaults` fixed
    on `import food101hf`, and nothing is called: a `torch.set_num_threads` in the parent before its DataLoader
    workers fork left OpenMP threads in each worker that do not block SIGTERM, so a SIGTERM to the process group
    (SLURM, Ctrl-C) killed the workers that `preemption.ignore_stop_signals` is there to keep alive. Only when
    torch was imported before food101hf does this call it."""
    import torch

    threads = resolve_threads()
    if torch.get_num_threads() != threads.count:
        torch.set_num_threads(threads.count)
    return threads

