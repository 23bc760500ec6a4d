"""Stop signals: the flag, the handlers' scope, a second signal while saving; end-to-end (slow): a signalled run
checkpoints at the update it stopped on, exits 75 and resumes bitwise identically. Launchers: test_requeue.py."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import CHECKPOINTED, comparable, digest, run_script, start_script, wait_for
from food101hf.checkpoint import (LATEST, Progress, checkpoint_root, complete_checkpoints, run_signature,
                                  save_checkpoint)
from food101hf.config import TrainConfig
from food101hf import preemption
from food101hf.preemption import PREEMPTED_EXIT, REPEAT_SECONDS, SaveAborted, StopOnSignal

SIGNATURE = run_signature(TrainConfig(), ["a", "b"], 1, {"train": {"images": 8, "fingerprint": "t"}})


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGUSR1])
def test_a_stop_signal_is_recorded_not_fatal_and_the_handlers_are_restored(accelerator, signum):
    before = signal.getsignal(signum)
    with StopOnSignal(accelerator) as stop:
        assert not stop.requested()
        os.kill(os.getpid(), signum)
        assert stop.requested() and stop.agreed == signum
        assert stop.requested()  # stays agreed
        preempted = stop.preempted("ckpt", 7)
    assert signal.getsignal(signum) is before
    assert preempted.code == PREEMPTED_EXIT == 75 and "after optimizer update 7" in preempted.message


def test_a_repeated_signal_is_ignored_until_a_checkpoint_is_written_then_exits_with_128_plus_signal(accelerator):
    with StopOnSignal(accelerator) as stop:
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # a launcher forwarding what the process also got from the terminal
        assert stop.requested() and stop.agreed == signal.SIGINT
        with pytest.raises(SaveAborted) as aborted, stop.saving():
            os.kill(os.getpid(), signal.SIGTERM)
    assert aborted.value.code == 128 + signal.SIGTERM


def test_the_same_signal_delivered_twice_does_not_abandon_the_checkpoint_it_asked_for(accelerator):
    """scancel signals every process of the job, and the batch script's trap forwards the same SIGTERM to train.py:
    on a busy machine the copy arrived 2 s later, while the checkpoint was being written, and abandoned it (exit 143
    instead of 75). A repeat of the same signal within REPEAT_SECONDS is the same request."""
    with StopOnSignal(accelerator) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested()
        with stop.saving():
            os.kill(os.getpid(), signal.SIGTERM)  # the forwarded copy, while saving: no SaveAborted
    assert REPEAT_SECONDS >= 2


def test_a_second_signal_while_saving_leaves_the_previous_checkpoint_intact(checkpointable, tmp_path, monkeypatch):
    monkeypatch.setattr(preemption, "REPEAT_SECONDS", 0)  # a second SIGTERM, later than a forwarded copy would come
    accelerator, _ = checkpointable
    first = save_checkpoint(accelerator, tmp_path, Progress(SIGNATURE, num_updates=3), keep=2)
    real_save_state = accelerator.save_state

    def interrupted_save_state(folder):
        real_save_state(folder)  # the files are written, then the second signal lands
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(accelerator, "save_state", interrupted_save_state)
    with StopOnSignal(accelerator) as stop:
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.requested()
        with pytest.raises(SaveAborted), stop.saving():
            save_checkpoint(accelerator, tmp_path, Progress(SIGNATURE, num_updates=5), keep=1)
    assert complete_checkpoints(tmp_path) == [first]
    assert (tmp_path / LATEST).read_text() == first.name
    assert sorted(p.name for p in tmp_path.iterdir()) == [LATEST, first.name]  # no temporary folder left


LOADER_SCRIPT = """
import sys, torch
from food101hf.preemption import ignore_stop_signals
loader = torch.utils.data.DataLoader(range(8), batch_size=4, num_workers=1, persistent_workers=True,
                                     worker_init_fn=ignore_stop_signals)
batches = iter(loader)
next(batches)
print(batches._workers[0].pid, flush=True)
sys.stdin.readline()
print(sum(int(batch.sum()) for batch in loader), flush=True)  # the same worker serves another epoch
"""  # then the interpreter exits: multiprocessing shuts the persistent worker down with SIGTERM


def test_dataloader_workers_leave_stop_signals_to_the_main_process_but_obey_its_sigterm():
    main = subprocess.Popen([sys.executable, "-c", LOADER_SCRIPT], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    worker = int(main.stdout.readline())
    for signum in ("TERM", "INT", "USR1"):  # from another process (SLURM, a terminal): left to the main process
        subprocess.run(["kill", f"-{signum}", str(worker)], check=True)
    time.sleep(0.5)
    assert Path(f"/proc/{worker}").exists() and main.poll() is None
    out, _ = main.communicate("go\n", timeout=60)  # hangs here if the worker ignored its parent's SIGTERM too
    assert out.strip() == "28" and main.returncode == 0


@pytest.mark.slow
@pytest.mark.xdist_group("checkpointed")  # conftest.trained(*CHECKPOINTED): one run on one worker
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1])
def test_a_signal_mid_epoch_checkpoints_that_update_exits_75_and_resumes_bitwise_identically(
        trained, tmp_path, signum):
    uninterrupted = trained(*CHECKPOINTED)  # the same command run to its end, once a session
    args, whole = uninterrupted.args, uninterrupted.out  # the signal follows the first periodic checkpoint (update 2)

    out, log = tmp_path / "stopped", tmp_path / "stopped.log"
    process = start_script([sys.executable, *args, "--output-dir", str(out)], log)
    wait_for(checkpoint_root(out) / LATEST, process)
    if signum == signal.SIGTERM:
        os.killpg(process.pid, signum)  # every process, DataLoader workers too, as SLURM and Ctrl-C do
    else:
        process.send_signal(signum)  # the main process only, as Kubernetes does
    assert process.wait(timeout=120) == PREEMPTED_EXIT
    stderr = log.read_text()
    assert "Traceback" not in stderr
    stopped = re.search(rf"stopped by {signal.Signals(signum).name} after optimizer update (\d+): checkpoint "
                        rf"(\S+)\. Resume with the same command plus `--resume auto`", stderr)
    assert stopped, stderr
    update, path = int(stopped[1]), Path(stopped[2])
    progress = json.loads((path / "progress.json").read_text())
    assert progress["num_updates"] == update and path.name == f"update-{update:08d}"
    assert 0 < progress["batches_done"] < 6, "the signal was meant to land mid-epoch"
    assert (checkpoint_root(out) / LATEST).read_text() == path.name
    assert not (out / "model.safetensors").exists()
    if signum == signal.SIGUSR1:
        return  # resumed after the same signal to the main process, from the same command's stop checkpoint, by
        # test_requeue's test_the_slurm_script_stops_requeues_and_resumes_bitwise_identically[python]

    resumed = run_script(*args, "--output-dir", str(out), "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr
    assert f"update {update}" in resumed.stderr
    assert digest(out / "model.safetensors") == digest(whole / "model.safetensors")
    assert comparable(json.loads((out / "metrics.json").read_text())) == \
        comparable(json.loads((whole / "metrics.json").read_text()))
