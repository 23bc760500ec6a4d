import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

from food101hf.runtime import LAUNCHER_MARKERS, keep_freed_memory, launcher_command, resolve_threads, usable_cores

ROOT = Path(__file__).resolve().parents[1]


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


THREADS = """
import food101hf  # first, as the entry points do: a launcher's default is replaced before torch loads
import torch
from food101hf.runtime import set_num_threads
threads = set_num_threads()
print(torch.get_num_threads(), threads.reason)
"""


@pytest.fixture
def thread_script(tmp_path):
    script = tmp_path / "threads.py"
    script.write_text(THREADS)
    return script


def threads_of(*command: str, **env: str) -> list[int]:
    """The torch thread count each process of `command` ends up with, from its output lines."""
    environment = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "LOCAL_WORLD_SIZE")} | env
    out = subprocess.run(command, env=environment, capture_output=True, text=True, check=True).stdout
    return [int(line.split()[0]) for line in out.splitlines() if line.split() and line.split()[0].isdigit()]


def launch(*args: str) -> list[str]:
    return [str(Path(sys.executable).with_name("accelerate")), "launch", "--config_file",
            str(ROOT / "accelerate_config.yaml"), *args]


def test_a_plain_python_process_uses_every_usable_core_unless_the_user_says_otherwise(thread_script):
    assert threads_of(sys.executable, str(thread_script)) == [usable_cores()]
    assert threads_of(sys.executable, str(thread_script), OMP_NUM_THREADS="1") == [1]  # the user's choice


def output_of(*command: str) -> str:
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


NEXT_STEP = "import food101hf\nfrom food101hf.runtime import launcher_command\nprint(launcher_command('polish.py'))\n"


@pytest.mark.slow
def test_accelerate_launch_with_the_shipped_config_no_longer_computes_on_one_core(thread_script, tmp_path):
    # the shipped config has use_cpu: false, so accelerate exports OMP_NUM_THREADS=1 to the script
    assert threads_of(*launch(str(thread_script))) == [usable_cores()]
    # the next steps a run prints start polish.py with the same launcher and config
    (tmp_path / "next.py").write_text(NEXT_STEP)
    assert output_of(*launch(str(tmp_path / "next.py"))).strip() == (
        f"accelerate launch --config_file {ROOT / 'accelerate_config.yaml'} {tmp_path / 'polish.py'}")
    # ... while what the user gives the launcher still wins, as an environment variable or as its flag
    assert threads_of(*launch(str(thread_script)), OMP_NUM_THREADS="1") == [1]
    assert threads_of(*launch("--num_cpu_threads_per_process", "1", str(thread_script))) == [1]


@pytest.mark.slow
def test_torchrun_processes_share_the_cores(thread_script):
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node", "2", str(thread_script)]
    assert threads_of(*torchrun) == [max(1, usable_cores() // 2)] * 2  # torchrun's default would be 1 each
    assert threads_of(*torchrun, OMP_NUM_THREADS="1") == [1, 1]
    (thread_script.parent / "next.py").write_text(NEXT_STEP)
    assert output_of(*torchrun[:-1], str(thread_script.parent / "next.py")).splitlines() == [
        f"torchrun --nproc_per_node 2 {thread_script.parent / 'polish.py'}"] * 2


@pytest.mark.parametrize("launcher_args, expected", [
    (None, "python polish.py"),  # no launcher
    (["/venv/bin/python3", "/venv/bin/accelerate", "launch", "--config_file", "my config.yaml", "train.py", "--config",
      "configs/demo.yaml"], "accelerate launch --config_file 'my config.yaml' polish.py"),
    (["/venv/bin/python3", "/venv/bin/torchrun", "--nproc_per_node", "2", "train.py"],
     "torchrun --nproc_per_node 2 polish.py"),
    (["/usr/bin/python3.11", "-m", "torch.distributed.run", "--nproc_per_node", "2", "train.py"],
     "python -m torch.distributed.run --nproc_per_node 2 polish.py"),
])
def test_the_next_step_starts_polish_as_this_run_was_started(launcher_args, expected, monkeypatch):
    for marker in LAUNCHER_MARKERS:
        monkeypatch.delenv(marker, raising=False)
    monkeypatch.setattr(sys, "argv", ["train.py", "--config", "configs/demo.yaml"])
    assert launcher_command("polish.py", launcher_args) == expected


def test_a_launcher_default_that_equals_the_share_is_not_said_to_be_overridden():
    """accelerate launch without a config on a CPU exports OMP_NUM_THREADS = the physical cores: the log said
    `accelerate launch's default OMP_NUM_THREADS=2 overridden` (2 by 2)."""
    launcher = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], env={})
    try:
        threads = resolve_threads({"OMP_NUM_THREADS": str(usable_cores()), "ACCELERATE_DYNAMO_BACKEND": "NO"},
                                  parent_pid=launcher.pid)
    finally:
        launcher.kill()
    assert threads.count == usable_cores() and "overridden" not in threads.reason and not threads.launcher_default


def test_a_launcher_value_is_kept_when_the_launcher_cannot_be_inspected():
    environ = {"OMP_NUM_THREADS": "1", "ACCELERATE_DYNAMO_BACKEND": "NO"}
    assert resolve_threads(environ, parent_pid=2**22 + 1).count == 1  # no such process: nothing to go on
    assert resolve_threads({"LOCAL_WORLD_SIZE": "64"}).count == 1  # more processes than cores: at least one
