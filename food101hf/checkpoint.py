"""Atomic, resumable checkpoints on top of Accelerate's save_state/load_state.

    OUTPUT_DIR-checkpoints/update-00000120/   Accelerate's state (model, optimizer, registered scheduler, grad
                                              scaler, every process's Python/NumPy/torch RNGs) + progress.json
    OUTPUT_DIR-checkpoints/latest             the name of the newest complete checkpoint

A checkpoint is written into a hidden temporary folder, flushed to disk and renamed into place, then `latest` is
replaced the same way; older checkpoints are deleted only after that. A crash at any moment leaves the previous
checkpoint intact and findable.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator
from accelerate.logging import get_logger

from .config import TrainConfig

PROGRESS_FILE = "progress.json"
LATEST = "latest"
PREFIX = "update-"
logger = get_logger(__name__)

# Settings that may change between a run and its resumption without changing what is computed.
RESUMABLE_CHANGES = {"output_dir", "num_workers", "report_to", "push_to_hub", "hub_private", "hub_revision",
                     "hub_commit_message", "checkpoint_every", "keep_checkpoints", "resume", "report"}


def checkpoint_root(output_dir: str | Path) -> Path:
    """Where a run's checkpoints go: beside OUTPUT_DIR, never inside it. OUTPUT_DIR is the model (what `hf upload`
    or any copy of the folder publishes), and a checkpoint is training state with pickles in it (optimizer.bin,
    RNG states), ~6x the model's size."""
    output_dir = Path(output_dir).resolve()
    return output_dir.with_name(f"{output_dir.name}-checkpoints")


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from, and why."""


@dataclass
class Progress:
    """Where a run is, saved as JSON beside Accelerate's state. `signature` identifies the run."""

    signature: dict
    epoch: int = 0  # the epoch in progress
    batches_done: int = 0  # batches of that epoch already trained on (a multiple of grad_accum_steps)
    num_updates: int = 0
    train_seconds: float = 0.0
    train_images: int = 0
    history: list = field(default_factory=list)  # per-epoch eval metrics


def run_signature(cfg: TrainConfig, label_names: list[str], num_processes: int) -> dict:
    """Everything that must match for a resumed run to compute what the original would have."""
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in RESUMABLE_CHANGES}
    return settings | {"label_names": list(label_names), "num_processes": num_processes}


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    _fsync(tmp)
    os.replace(tmp, path)
    _fsync(path.parent)


def complete_checkpoints(root: Path) -> list[Path]:
    """Finished checkpoints, oldest first (temporary folders start with a dot and are never listed)."""
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.name.startswith(PREFIX) and (p / PROGRESS_FILE).is_file())


def save_checkpoint(accelerator: Accelerator, root: Path, progress: Progress, keep: int) -> Path:
    """Called by every process (each saves its own RNG states); the main process finalises it."""
    name = f"{PREFIX}{progress.num_updates:08d}"
    final, tmp = root / name, root / f".tmp-{name}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(tmp))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (tmp / PROGRESS_FILE).write_text(json.dumps(dataclasses.asdict(progress), indent=2))
        for file in tmp.rglob("*"):
            _fsync(file)
        _fsync(tmp)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        _fsync(root)
        _write_atomically(root / LATEST, name)
        for old in complete_checkpoints(root)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def find_checkpoint(resume: str, root: Path) -> Path | None:
    """`auto`: the newest complete checkpoint under root, or None; otherwise the given path, which must be one."""
    if resume == "auto":
        pointer = root / LATEST
        if pointer.is_file() and (root / pointer.read_text().strip() / PROGRESS_FILE).is_file():
            return root / pointer.read_text().strip()
        found = complete_checkpoints(root)
        return found[-1] if found else None
    path = Path(resume).expanduser()
    if not (path / PROGRESS_FILE).is_file():
        raise CheckpointError(f"{path} is not a checkpoint (no {PROGRESS_FILE}); checkpoints are the "
                              f"{PREFIX}* folders under OUTPUT_DIR-checkpoints")
    return path


def load_checkpoint(accelerator: Accelerator, path: Path, signature: dict) -> Progress:
    """Check the checkpoint belongs to this run, then restore everything save_checkpoint saved."""
    saved = json.loads((path / PROGRESS_FILE).read_text())
    differing = sorted(key for key in signature.keys() | saved["signature"].keys()
                       if signature.get(key) != saved["signature"].get(key))
    if differing:
        details = "; ".join(f"{key}: checkpoint {saved['signature'].get(key)!r}, now {signature.get(key)!r}"
                            for key in differing)
        raise CheckpointError(f"{path} comes from a different run ({details}). Resume with the same settings, "
                              f"or use another --output-dir to start afresh")
    accelerator.load_state(str(path))
    return Progress(**saved)


def start_or_resume(accelerator: Accelerator, cfg: TrainConfig, label_names: list[str], root: Path) -> Progress:
    """A fresh Progress, or, with cfg.resume, the one restored (with all of Accelerate's state) from the
    checkpoint it names; `auto` starts fresh when root holds none yet."""
    progress = Progress(run_signature(cfg, label_names, accelerator.num_processes))
    path = find_checkpoint(cfg.resume, root) if cfg.resume else None
    if cfg.resume and path is None:
        logger.info(f"--resume auto: no checkpoint in {root}, starting fresh")
    if path is None:
        return progress
    progress = load_checkpoint(accelerator, path, progress.signature)
    logger.info(f"resumed from {path}: epoch {progress.epoch + 1}, batch {progress.batches_done}, "
                f"update {progress.num_updates}")
    return progress
