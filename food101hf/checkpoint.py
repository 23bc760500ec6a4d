"""Atomic, resumable checkpoints on top of Accelerate's save_state/load_state.

    OUTPUT_DIR-checkpoints/update-00000120/   Accelerate's state (model, optimizer, registered scheduler, grad
                                              scaler, every process's Python/NumPy/torch RNGs) + progress.json
    OUTPUT_DIR-checkpoints/latest             the name of the newest complete checkpoint

A checkpoint is written into a hidden temporary folder, flushed to disk and renamed into place, then `latest` is
replaced the same way; older checkpoints are deleted only after that. A crash at any moment leaves the previous
checkpoint intact and findable. A save that fails (a full or read-only disk) or is cut short by a second stop
signal removes its temporary folder at once; a failure of the disk ends in one CheckpointError line naming the
file, the intact checkpoint and how to resume. Temporary folders a killed save left behind are removed when the
next run starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from accelerate import Accelerator

from .config import TrainConfig
from .errors import CheckpointError
from .outputs import dataset_kind
from .preemption import SaveAborted
from .storage import failed_file, human, normal_mode, storage_failure

PROGRESS_FILE = "progress.json"
LATEST = "latest"
PREFIX = "update-"
logger = logging.getLogger(__name__)

# Settings that may change between a run and its resumption without changing what is computed.
RESUMABLE_CHANGES = {"output_dir", "num_workers", "report_to", "push_to_hub", "hub_private", "hub_revision",
                     "hub_commit_message", "checkpoint_every", "keep_checkpoints", "resume", "report"}
# Which config and columns a Hub dataset is read with is part of the data's identity (its content, compared once
# loaded), not a setting: a detected column (None) is the one a checkpoint written before detection named
NOT_COMPARED = RESUMABLE_CHANGES | {"dataset_config", "image_column", "label_column"}


def checkpoint_root(output_dir: str | Path) -> Path:
    """Where a run's checkpoints go: beside OUTPUT_DIR, never inside it. OUTPUT_DIR is the model (what `hf upload`
    or any copy of the folder publishes), and a checkpoint is training state with pickles in it (optimizer.bin,
    RNG states), ~6x the model's size."""
    output_dir = Path(output_dir).resolve()
    return output_dir.with_name(f"{output_dir.name}-checkpoints")


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


def run_signature(cfg: TrainConfig, label_names: list[str], num_processes: int, data: dict) -> dict:
    """Everything that must match for a resumed run to compute what the original would have: the settings, the
    process count, the classes and the data (`Splits.identity`: each split's size and content; other data would
    size the schedule for other data and skip other samples mid-epoch). Where a local dataset lies is recorded
    but not compared (`_same`): its content is."""
    return _settings(cfg, num_processes) | {"label_names": list(label_names), "data": data}


def _settings(cfg: TrainConfig, num_processes: int) -> dict:
    settings = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_COMPARED}
    return settings | {"num_processes": num_processes}


def _split_key(saved_split: dict) -> str:
    """What a split is compared by: its `content`, or, in a checkpoint written before food101hf recorded content,
    datasets' `fingerprint` (which changes when a local folder moves: such a checkpoint resumes only in place)."""
    return "content" if "content" in saved_split else "fingerprint"


def _same_split(saved: dict, now: dict | None) -> bool:
    key = _split_key(saved)
    return now is not None and saved.get("images") == now["images"] and saved.get(key) == now[key]


def _same(key: str, saved, now) -> bool:
    """Whether a saved signature's `key` matches this run's: a local dataset is compared by its content (the
    `data` key), not by where it lies, so a moved or re-staged folder resumes."""
    if key == "dataset" and dataset_kind(saved) == dataset_kind(now) == "local":
        return True
    if key == "data" and isinstance(saved, dict):
        return saved.keys() == now.keys() and all(_same_split(saved[split], now[split]) for split in saved)
    return saved == now


def _refuse_other_run(path: Path, saved: dict, signature: dict) -> None:
    """Raise CheckpointError naming every key of `signature` the checkpoint's saved signature differs in."""
    differing = sorted(key for key in signature if not _same(key, saved.get(key), signature[key]))
    if not differing:
        return
    details = []
    for key in differing:
        if key == "data" and isinstance(saved.get(key), dict):
            details += [f"{split} split: checkpoint {old.get('images')} images ({_split_key(old)} "
                        f"{old.get(_split_key(old))}), now {now['images']} ({_split_key(old)} {now[_split_key(old)]})"
                        for split, old in saved[key].items()
                        if (now := signature[key].get(split)) is not None and not _same_split(old, now)]
        else:
            details.append(f"{key}: checkpoint {saved.get(key)!r}, now {signature[key]!r}")
    what = "other data" if differing == ["data"] else "a different run"
    raise CheckpointError(f"{path} comes from {what} ({'; '.join(details)}). Resume with the same settings and "
                          f"data, or use another --output-dir to start afresh")


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
    try:
        if accelerator.is_main_process:
            shutil.rmtree(tmp, ignore_errors=True)  # left by a run killed while saving
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(tmp))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            (tmp / PROGRESS_FILE).write_text(json.dumps(dataclasses.asdict(progress), indent=2, allow_nan=False))
            normal_mode(tmp)  # Accelerate's model.safetensors is written 0o600, the rest with the umask's mode
            for file in tmp.rglob("*"):
                _fsync(file)
            _fsync(tmp)
            shutil.rmtree(final, ignore_errors=True)
            os.replace(tmp, final)
            _fsync(root)
            _write_atomically(root / LATEST, name)
            for old in complete_checkpoints(root)[:-keep]:
                shutil.rmtree(old)
    except BaseException as e:
        _abandon(e, tmp, final, root)
        raise
    accelerator.wait_for_everyone()
    return final


def _abandon(error: BaseException, tmp: Path, final: Path, root: Path) -> None:
    """A save failed or was interrupted: remove its temporary folder at once (it may be what fills the disk) and,
    when the disk is the cause, raise one CheckpointError line instead of the serializer's traceback."""
    cause = storage_failure(error, root) if isinstance(error, Exception) else None
    file = failed_file(error, tmp)
    written = sum(p.stat().st_size for p in tmp.rglob("*") if p.is_file()) if tmp.is_dir() else 0
    shutil.rmtree(tmp, ignore_errors=True)
    (root / f".{LATEST}.tmp").unlink(missing_ok=True)
    if isinstance(error, SaveAborted):
        logger.warning(f"second stop signal while saving {final.name}: abandoned. {resume_advice(root)}")
        return
    if cause is None:
        return
    if file is not None and file.is_relative_to(tmp):
        file = final / file.relative_to(tmp)
    raise CheckpointError(f"could not write checkpoint {file or final}: {cause} (after {human(written)}; its "
                          f"temporary folder was removed). {resume_advice(root)}") from None


def resume_advice(root: Path) -> str:
    """One sentence: the newest intact checkpoint under root and how to continue from it."""
    intact = find_checkpoint("auto", root)
    if intact is None:
        return f"No checkpoint exists in {root} yet: free space, then rerun the same command"
    return (f"The checkpoint {intact} is intact: free space in {root.parent}, then rerun the same command plus "
            f"`--resume auto`")


def remove_abandoned_saves(root: Path) -> None:
    """Temporary folders of saves a killed run left behind: never resumable, and possibly what fills the disk."""
    if root.is_dir():
        for tmp in root.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)


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
    _refuse_other_run(path, saved["signature"], signature)
    accelerator.load_state(str(path))
    return Progress(**saved | {"signature": signature})  # later checkpoints record where the data lies now


def check_resume(cfg: TrainConfig, root: Path, num_processes: int) -> None:
    """Before any data or weights load: refuse a --resume that names no checkpoint, or one saved with other
    settings (the classes and the data are compared once loaded, by `start_or_resume`)."""
    path = find_checkpoint(cfg.resume, root) if cfg.resume else None
    if path is not None:
        saved = json.loads((path / PROGRESS_FILE).read_text())
        _refuse_other_run(path, saved["signature"], _settings(cfg, num_processes))


def start_or_resume(accelerator: Accelerator, cfg: TrainConfig, label_names: list[str], root: Path,
                    data: dict) -> Progress:
    """A fresh Progress, or, with cfg.resume, the one restored (with all of Accelerate's state) from the
    checkpoint it names; `auto` starts fresh when root holds none yet. `data` is `Splits.identity()`."""
    progress = Progress(run_signature(cfg, label_names, accelerator.num_processes, data))
    if accelerator.is_main_process:
        remove_abandoned_saves(root)
    accelerator.wait_for_everyone()
    path = find_checkpoint(cfg.resume, root) if cfg.resume else None
    if cfg.resume and path is None:
        logger.info(f"--resume auto: no checkpoint in {root}, starting fresh")
    if path is None:
        return progress
    progress = load_checkpoint(accelerator, path, progress.signature)
    logger.info(f"resumed from {path}: epoch {progress.epoch + 1}, batch {progress.batches_done}, "
                f"update {progress.num_updates}")
    return progress
