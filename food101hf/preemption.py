"""Stop training cleanly when the machine is taken away: SIGTERM, SIGINT or SIGUSR1 -> finish the optimizer update,
checkpoint, exit with status 75.

Who sends what: SLURM sends SIGTERM at preemption or the time limit (SIGKILL follows after KillWait, 30 s by
default) and, with `#SBATCH --signal=B:USR1@120`, SIGUSR1 to the batch script 120 s before the limit; Kubernetes
and spot VMs send SIGTERM, then SIGKILL after the grace period; Ctrl-C in a terminal is SIGINT. torchrun forwards
the SIGTERM/SIGINT it receives to every rank, but a signal may also reach a single rank.

The exit status is 75 (`os.EX_TEMPFAIL`, sysexits.h: "temporary failure; the user is invited to retry"), not the
shell's 128+signal: 143 or 138 also mean "killed without a checkpoint", and a requeue script must be able to tell
"stopped cleanly, resume me" apart (`[ $? -eq 75 ] && scontrol requeue $SLURM_JOB_ID`; Kubernetes'
podFailurePolicy `onExitCodes: [75]`).

Several processes stop at the same update, agreed through the process group without a blocking collective per
step: after each update every process posts its flag in an asynchronous all-reduce (MAX, on a gloo group of CPU
tensors: no GPU stream is involved) and reads the one it posted the update before, which has long completed. All
processes therefore see a signal at the same update: the first or second one after it arrived anywhere. A single
process stops after the update in progress.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time

import torch
import torch.distributed as dist

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
PREEMPTED_EXIT = os.EX_TEMPFAIL  # 75
# the first signal again within this many seconds is a forwarded copy, not a second request (StopOnSignal): scancel's
# SIGTERM and the batch script's forwarded one arrived 2 s apart on a busy 2-core machine
REPEAT_SECONDS = 5.0
logger = logging.getLogger(__name__)  # every process says where it stopped (cli.setup_logging)


class Preempted(SystemExit):
    """Training stopped on a signal after a checkpoint was written; the process exits with PREEMPTED_EXIT."""

    def __init__(self, message: str):
        super().__init__(PREEMPTED_EXIT)
        self.message = message


class SaveAborted(SystemExit):
    """Another signal arrived while a checkpoint was being written: exit at once with 128+signal, the status of a
    process killed by it (the checkpoint writer then removes its temporary folder; the previous one is intact)."""

    def __init__(self, signum: int):
        super().__init__(128 + signum)
        self.signum = signum


def ignore_stop_signals(worker_id: int = 0) -> None:
    """A DataLoader `worker_init_fn`: the workers leave SIGTERM/SIGINT/SIGUSR1 to the main process. SLURM and
    Ctrl-C signal every process, and a worker killed by one makes torch raise "DataLoader worker exited
    unexpectedly" in the main process, in the middle of the update it is finishing. Only a SIGTERM from the main
    process itself still ends a worker: multiprocessing sends one to shut its workers down when it exits. (A
    signal handler cannot see the sender, so the signals are blocked and a thread waits for them.)"""
    signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)  # for this thread and every thread started after it
    parent = os.getppid()

    def wait_for_signals():
        while True:
            received = signal.sigwaitinfo(STOP_SIGNALS)
            if received.si_signo == signal.SIGTERM and received.si_pid == parent:
                os._exit(128 + signal.SIGTERM)

    threading.Thread(target=wait_for_signals, name="stop-signals", daemon=True).start()


class StopOnSignal:
    """Context manager for a training loop: while open, a stop signal is recorded instead of killing the process.

        with StopOnSignal(accelerator) as stop:
            for each optimizer update:
                ...
                if stop.requested():   # True on every process at the same update
                    with stop.saving():
                        save a checkpoint
                    raise stop.preempted(where, update)

    A signal while a checkpoint is written inside `saving()`, once one was received, raises SaveAborted (exit at
    once, 128+signal), unless it is the first signal again within REPEAT_SECONDS: launchers and batch scripts
    forward the signal they receive, so a process often gets the same one twice (Ctrl-C under torchrun: from the
    terminal and from torchrun; scancel: from SLURM and from the script's trap), within milliseconds on a quiet
    machine and seconds on a busy one. Before `saving()`, repeats are ignored.
    Call `requested()` the same number of times on every process.
    """

    def __init__(self, accelerator):
        self.accelerator = accelerator
        self.signum: int | None = None  # the first signal this process received
        self._received_at = 0.0  # when (time.monotonic)
        self.agreed: int | None = None  # the signal every process has agreed to stop on
        self._pid = os.getpid()
        self._saving = False
        self._previous = {}
        self._group = None
        self._pending = None  # (work, tensor) of the all-reduce posted at the previous check

    def __enter__(self) -> StopOnSignal:
        if self.accelerator.num_processes > 1:
            # a side group of CPU tensors: the agreement never waits on (or synchronises) a GPU stream
            self._group = dist.group.WORLD if dist.get_backend() == "gloo" else dist.new_group(backend="gloo")
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        if self._pending is not None:  # every process posted it: it completes without waiting on anything
            self._pending[0].wait()
            self._pending = None

    def _handle(self, signum: int, frame) -> None:
        if os.getpid() != self._pid:  # a forked DataLoader worker that inherited the handler: not ours to act on
            return
        if self.signum is not None:
            copy = signum == self.signum and time.monotonic() - self._received_at < REPEAT_SECONDS
            if self._saving and not copy:
                raise SaveAborted(signum)
            return
        self.signum, self._received_at = signum, time.monotonic()
        # a signal handler must not take the logging lock the interrupted code may hold: write directly
        os.write(2, f"received {signal.Signals(signum).name}: stopping after this optimizer update, with a "
                    f"checkpoint (another signal while it is written abandons it)\n".encode())

    @contextlib.contextmanager
    def saving(self):
        """Around a checkpoint's writing: another signal then abandons it (the previous checkpoint is intact)."""
        self._saving = True
        try:
            yield
        finally:
            self._saving = False

    def requested(self, now: bool = False) -> bool:
        """Whether to stop after the update just finished; the same answer on every process. With `now` (at a
        point reached once an epoch, where a blocking collective costs nothing), signals up to this moment count."""
        if self.agreed is not None:
            return True
        if self._group is None:
            self.agreed = self.signum
            return self.agreed is not None
        flag = torch.tensor([self.signum or 0], dtype=torch.int64)
        work = dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self._group, async_op=True)
        previous, self._pending = self._pending, (work, flag)
        if now:
            work.wait()
            self._pending = None
            previous = previous or (work, flag)
        if previous is None:
            return False
        previous[0].wait()
        agreed = max(int(previous[1]), int(flag) if now else 0)
        self.agreed = agreed or None
        return self.agreed is not None

    def preempted(self, checkpoint, update: int) -> Preempted:
        """The exception that ends the run, with the line saying where the checkpoint is and how to resume."""
        name = signal.Signals(self.agreed).name
        message = (f"stopped by {name} after optimizer update {update}: checkpoint {checkpoint}. Resume with the "
                   f"same command plus `--resume auto` (exit status {PREEMPTED_EXIT}: preempted, resumable)")
        where = f" (process {self.accelerator.process_index})" if self.accelerator.num_processes > 1 else ""
        logger.warning(message + where)
        # the interpreter's final garbage collection over millions of torch/timm/datasets objects took 6-8 s of the
        # grace period here (2-core CPU); frozen, they are left to the OS, which frees the process anyway
        gc.freeze()
        return Preempted(message)
