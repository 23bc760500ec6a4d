"""Preemption through the launchers: the SLURM scripts in scripts/slurm, run as written with a stand-in `scontrol`
and the tiny run in place of the recipe's, stop, requeue and resume bitwise identically; under torchrun a signal
that reaches one rank stops both at the same update, in a checkpoint identical to the periodic one there (slow).
The cluster files themselves are checked fast: the scripts parse, the Kubernetes Job is one, docs/resume.md links
them."""

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import CHECKPOINTED, ROOT, TINY, digest, start_script, wait_for
from food101hf.checkpoint import LATEST, checkpoint_root
from food101hf.errors import DivergedError

TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
# the tiny run each launcher starts: one process, the run test_preemption.py and test_reliability.py stop and kill
# too (2 epochs of 6 updates); two processes (24 images / (4 x 2) = 3 updates an epoch), a checkpoint every update
FLAGS = {"python": CHECKPOINTED,
         "torchrun": [*TINY, "--epochs", "3", "--num-workers", "0", "--checkpoint-every", "1"]}
RECIPE = "train.py --config configs/food101.yaml --resume auto"
SLURM = {"python": ROOT / "scripts" / "slurm" / "train-1gpu.sbatch",
         "torchrun": ROOT / "scripts" / "slurm" / "train-multi-gpu.sbatch"}
JOB = ROOT / "scripts" / "k8s" / "job.yaml"


def files(checkpoint: Path) -> dict[str, str]:
    return {p.name: digest(p) for p in checkpoint.iterdir() if p.name != "progress.json"}


def progress(checkpoint: Path) -> dict:
    """The checkpoint's progress.json without its one timing."""
    return {k: v for k, v in json.loads((checkpoint / "progress.json").read_text()).items() if k != "train_seconds"}


@pytest.mark.parametrize("path", sorted(SLURM.values()), ids=lambda path: path.name)
def test_the_slurm_scripts_are_executable_bash(path):
    assert os.access(path, os.X_OK) and path.read_text().startswith("#!/bin/bash\n#SBATCH ")
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_the_kubernetes_job_ignores_a_clean_stop_and_resumes_and_fails_at_a_divergence():
    job = yaml.safe_load(JOB.read_text())
    assert (job["apiVersion"], job["kind"]) == ("batch/v1", "Job") and job["metadata"]["name"]
    rules = job["spec"]["podFailurePolicy"]["rules"]
    assert {"action": "Ignore", "onExitCodes": {"containerName": "train", "operator": "In", "values": [75]}} in rules
    # a diverged run (errors.DivergedError) would diverge again from its checkpoint: not retried
    assert {"action": "FailJob", "onExitCodes": {"containerName": "train", "operator": "In",
                                                 "values": [DivergedError.exit_status]}} in rules
    pod = job["spec"]["template"]["spec"]
    assert pod["restartPolicy"] == "Never"  # a Job's podFailurePolicy requires it
    train = next(container for container in pod["containers"] if container["name"] == "train")
    command = train["command"]
    assert command[:2] == ["python", "train.py"] and command[-2:] == ["--resume", "auto"], command
    assert train["image"]


def test_the_resume_page_links_every_cluster_file():
    page = (ROOT / "docs" / "resume.md").read_text()
    for path in [*SLURM.values(), JOB]:
        assert f"(../{path.relative_to(ROOT)})" in page, path


@pytest.fixture
def uninterrupted(trained, food) -> dict[str, Path]:
    """The dataset and the output folders of runs nothing stopped, one and two processes (trained once a session)."""
    runs = {"dataset": food, "python": trained(*FLAGS["python"]).out}
    # all 9 updates' checkpoints kept: the periodic checkpoints a stopped run's is compared with
    runs["torchrun"] = trained(*FLAGS["torchrun"], "--keep-checkpoints", "9", launcher=tuple(TORCHRUN[1:])).out
    return runs


def slurm_script(launcher: str) -> str:
    """The batch script in scripts/slurm whose run starts with launcher (python: one GPU, torchrun: several)."""
    script = SLURM[launcher].read_text()
    assert f"\n{launcher} " in script
    return script


def as_tiny_run(script: str, launcher: str, dataset: Path, out: Path) -> str:
    """The script with the recipe's launcher and run swapped for this interpreter and the tiny run into out."""
    script = script.replace("\npython train.py", f"\n{sys.executable} train.py")
    script = script.replace("\ntorchrun --nproc_per_node 4", "\n" + " ".join(TORCHRUN))
    script = script.replace(RECIPE, f"train.py --dataset {dataset} {' '.join(FLAGS[launcher])} --resume auto "
                                    f"--output-dir {out}")
    script = script.replace("outputs/food101-resnet18-192", str(out))
    assert str(out) in script and "configs/food101.yaml" not in script
    return script


def submit(script: str, tmp_path: Path, log: Path) -> subprocess.Popen:
    """Run a batch script the way SLURM does: bash, SLURM_JOB_ID set, `scontrol` on PATH (records its arguments)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.calls"}\n')
    (bin_dir / "scontrol").chmod(0o755)
    (tmp_path / "job.sh").write_text(script)
    env = {"PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4242", "PYTHONUNBUFFERED": "1"}
    return start_script(["bash", str(tmp_path / "job.sh")], log, env)


def scontrol_calls(tmp_path: Path) -> list[str]:
    calls = tmp_path / "scontrol.calls"
    return calls.read_text().splitlines() if calls.exists() else []


@pytest.mark.xdist_group("checkpointed")  # conftest.trained(*CHECKPOINTED): one run on one worker
@pytest.mark.slow
@pytest.mark.parametrize("launcher, status", [("python", 75), ("torchrun", 1)])
def test_the_slurm_script_stops_requeues_and_resumes_bitwise_identically(uninterrupted, tmp_path, launcher, status):
    out, log = tmp_path / "run", tmp_path / "job.log"
    script = as_tiny_run(slurm_script(launcher), launcher, uninterrupted["dataset"], out)

    job = submit(script, tmp_path, log)
    wait_for(checkpoint_root(out) / LATEST, job)
    job.send_signal(signal.SIGUSR1)  # --signal=B:USR1: the batch shell only
    assert job.wait(timeout=180) == status, log.read_text()
    assert scontrol_calls(tmp_path) == ["requeue 4242"], log.read_text()
    stderr = log.read_text()
    stops = re.findall(r"stopped by SIG(TERM|USR1) after optimizer update", stderr)
    assert len(stops) == (2 if launcher == "torchrun" else 1)
    tracebacks = stderr.count("Traceback (most recent call last)")  # torchrun's own, when it is signalled
    assert tracebacks == 0 if launcher == "python" else tracebacks == 1 and "SignalException" in stderr, stderr
    assert not (out / "model.safetensors").exists()

    requeued = submit(script, tmp_path, log)  # SLURM starts the same script again
    assert requeued.wait(timeout=600) == 0, log.read_text()
    assert scontrol_calls(tmp_path) == ["requeue 4242"]  # finished: not requeued again
    assert digest(out / "model.safetensors") == digest(uninterrupted[launcher] / "model.safetensors")


@pytest.mark.xdist_group("checkpointed")  # conftest.trained(*CHECKPOINTED): one run on one worker
@pytest.mark.slow
@pytest.mark.parametrize("launcher, status", [("python", 75), ("torchrun", 1)])
def test_the_slurm_script_waits_for_the_checkpoint_on_scancel_and_does_not_requeue(uninterrupted, tmp_path, launcher,
                                                                                  status):
    out, log = tmp_path / "run", tmp_path / "job.log"
    job = submit(as_tiny_run(slurm_script(launcher), launcher, uninterrupted["dataset"], out), tmp_path, log)
    wait_for(checkpoint_root(out) / LATEST, job)
    os.killpg(job.pid, signal.SIGTERM)  # scancel and preemption: every process of the job, the script included
    assert job.wait(timeout=180) == status, log.read_text()  # the script outlived the signal: it waited for the run
    stopped = re.search(r"stopped by SIGTERM after optimizer update (\d+): checkpoint (\S+)\.", log.read_text())
    assert stopped, log.read_text()
    assert (checkpoint_root(out) / LATEST).read_text() == Path(stopped[2]).name
    assert scontrol_calls(tmp_path) == []  # cancelled or preempted: requeueing is SLURM's call, not the script's


def rank_pids(launcher: subprocess.Popen) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes, from their environment."""
    found = {}
    for status in Path("/proc").glob("[0-9]*/environ"):
        try:
            environ = dict(item.split("=", 1) for item in status.read_text().split("\0") if "=" in item)
        except OSError:
            continue
        if environ.get("TORCHELASTIC_RUN_ID") and str(launcher.pid) in _ancestors(int(status.parent.name)):
            found[int(environ["RANK"])] = int(status.parent.name)
    return found


def _ancestors(pid: int) -> list[str]:
    chain = []
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            break
        chain.append(str(pid))
    return chain


@pytest.mark.xdist_group("checkpointed")  # conftest.trained(*CHECKPOINTED): one run on one worker
@pytest.mark.slow
def test_two_processes_stop_at_the_same_update_when_only_one_is_signalled(uninterrupted, tmp_path):
    out, log = tmp_path / "run", tmp_path / "run.log"
    args = ["train.py", "--dataset", str(uninterrupted["dataset"]), *FLAGS["torchrun"]]
    process = start_script([*TORCHRUN, *args, "--output-dir", str(out)], log)
    wait_for(checkpoint_root(out) / LATEST, process)
    ranks = rank_pids(process)
    assert sorted(ranks) == [0, 1], ranks
    os.kill(ranks[1], signal.SIGUSR1)  # the rank that does not write the checkpoint's shared files
    process.wait(timeout=120)
    stderr = log.read_text()
    stops = re.findall(r"stopped by SIGUSR1 after optimizer update (\d+): checkpoint (\S+)\. .*\(process (\d)\)",
                       stderr)
    assert sorted(rank for _, _, rank in stops) == ["0", "1"], stderr
    assert len({(update, path) for update, path, _ in stops}) == 1  # the same update, the same checkpoint
    path = Path(stops[0][1])
    assert json.loads((path / "progress.json").read_text())["num_updates"] == int(stops[0][0])
    periodic = checkpoint_root(uninterrupted["torchrun"]) / path.name
    assert files(path) == files(periodic)  # weights, optimizer, scheduler, every process's RNG states
    assert progress(path) == progress(periodic)
    assert not (out / "model.safetensors").exists()
    assert not list(checkpoint_root(out).glob(".tmp-*"))
    # resuming from it is resuming from that periodic checkpoint's files: the bitwise-identical resume of a torchrun
    # run from its stop checkpoint is test_the_slurm_script_stops_requeues_and_resumes_bitwise_identically[torchrun]
