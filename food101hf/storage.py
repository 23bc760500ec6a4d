"""Disks that are full or read-only: check before a run, and turn a write that still fails into one line.

    check_output_dir(folder, model_name, keep)   before any work: writable, room for the export + one checkpoint
    staged_writes(folder, advice)                 files written into a hidden temporary folder, moved into place
    normal_mode(path)                             the mode a plain write gives, whatever the writer gave
    storage_failure(error, folder)                the disk's reason for an error, or None when it is not the disk's

A full disk does not always surface as OSError: torch's serializer raises RuntimeError ("unexpected pos",
"file write failed") and safetensors its own SafetensorError ("... No space left on device (os error 28)"). So an
error counts as the disk's when it is an OSError of a storage kind, or names one in its message, or when a write
into the same folder fails right after it, or when the folder's filesystem has (almost) nothing free.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import shutil
import tempfile
from pathlib import Path

from .errors import StorageError

STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG, errno.EIO}
OPTIMIZER_SLOTS = 2  # AdamW (the default) keeps exp_avg and exp_avg_sq: two fp32 tensors per trainable parameter
SMALL_FILES = 16 * 2**20  # config, metrics, model card, report pictures, RNG states, progress: a few MB at most
NEARLY_FULL = 2**20


def human(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(size) < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError


@functools.cache
def estimated_sizes(model_name: str, num_classes: int = 1000) -> tuple[int, int]:
    """(one checkpoint, the model export) in bytes, from the model's parameter and buffer counts alone: the model
    is built on the meta device (no weights, no download). A checkpoint holds the fp32 state dict plus
    OPTIMIZER_SLOTS fp32 tensors per parameter (frozen ones have none: an upper bound), the export the state dict.
    The default head of 1000 classes bounds smaller ones (ResNet-18's is 4% of its parameters)."""
    import timm
    import torch

    with torch.device("meta"):
        model = timm.create_model(model_name, pretrained=False, num_classes=num_classes)
    state = sum(t.numel() * max(t.element_size(), 4) for t in model.state_dict().values())
    optimizer = OPTIMIZER_SLOTS * sum(p.numel() * 4 for p in model.parameters())
    return state + optimizer + SMALL_FILES, state + SMALL_FILES


def _probe(folder: Path, size: int = 0) -> None:
    """Create, write, flush and remove a file in `folder`; raises the OSError a real write would meet."""
    fd, name = tempfile.mkstemp(prefix=".write-test-", dir=folder)
    try:
        os.write(fd, b"\0" * size)
        os.fsync(fd)
    finally:
        os.close(fd)
        os.unlink(name)


def check_output_dir(folder: str | Path, model_name: str) -> int:
    """Check `folder` (or, while it does not exist yet, the folder it will be created in: a failed start leaves
    nothing behind) can be written and has room for the model export and one checkpoint (see `estimated_sizes`);
    returns the bytes free. Raises StorageError naming the folder, the space needed and the space free."""
    folder = Path(folder)
    existing = next(p for p in (folder.absolute(), *folder.absolute().parents) if p.exists())
    try:
        _probe(existing, 4096)
    except OSError as e:
        raise StorageError(f"cannot write to the output folder {folder}: {e.strerror}. Make it writable or pass "
                           f"another --output-dir") from None
    checkpoint, export = estimated_sizes(model_name)
    free = shutil.disk_usage(existing).free
    if free < checkpoint + export:
        raise StorageError(f"not enough space in {folder}: a {model_name} run needs about "
                           f"{human(checkpoint + export)} (export {human(export)} + one checkpoint "
                           f"{human(checkpoint)}), {human(free)} free. Free space or pass another --output-dir")
    return free


def room_warning(folder: str | Path, model_name: str, keep_checkpoints: int, free: int) -> str | None:
    """A line to log when `free` bytes hold the export and one checkpoint but not the `keep_checkpoints` + 1 a
    run holds at its peak."""
    checkpoint, export = estimated_sizes(model_name)
    peak = export + (keep_checkpoints + 1) * checkpoint
    if free >= peak:
        return None
    return (f"{folder} has {human(free)} free; with --keep-checkpoints {keep_checkpoints} a run needs up to "
            f"{human(peak)} ({keep_checkpoints + 1} checkpoints of {human(checkpoint)} while the newest is "
            f"written): a later checkpoint may fail (the previous one stays intact)")


def storage_failure(error: BaseException, folder: str | Path) -> str | None:
    """Why `error`, raised while writing into `folder`, is the disk's fault ("No space left on device", ...), or
    None when it is not (then it is a bug to show in full). Call it before removing what was written: a write
    test is part of the diagnosis."""
    if isinstance(error, OSError) and error.errno in STORAGE_ERRNOS:
        return error.strerror
    # safetensors: "Error while serializing: I/O error: No space left on device (os error 28)"
    named = [os.strerror(code) for code in STORAGE_ERRNOS if os.strerror(code) in str(error)]
    if named:
        return named[0]
    try:
        _probe(Path(folder), 65536)
    except OSError as e:
        return e.strerror
    free = shutil.disk_usage(folder).free
    return f"the disk is full: {human(free)} free" if free < NEARLY_FULL else None


def _umask() -> int:
    mask = os.umask(0o022)  # the one way to read it (Python has no getumask before 3.14); set straight back
    os.umask(mask)
    return mask


def normal_mode(path: Path) -> None:
    """Give `path` (a file, or a folder and everything in it) the mode a plain open() or mkdir() gives: 0o666 or
    0o777 less the umask (typically 0o644/0o755, readable by colleagues on a shared disk). Writers that stage
    through a private temporary file create 0o600 (safetensors 0.8 does, like `tempfile.mkstemp`; so does
    `tempfile.mkdtemp`, 0o700), and `os.replace` keeps the mode of what it moves."""
    umask = _umask()
    for item in [path, *sorted(path.rglob("*"))] if path.is_dir() else [path]:
        os.chmod(item, (0o777 if item.is_dir() else 0o666) & ~umask)


def failed_file(error: BaseException, stage: Path) -> Path | None:
    """The file a write failed on: the error's own filename, else the file in `stage` written last."""
    if isinstance(error, OSError) and error.filename:
        return Path(error.filename)
    files = [p for p in stage.rglob("*") if p.is_file()] if stage.is_dir() else []
    return max(files, key=lambda p: p.stat().st_mtime_ns) if files else None


@contextlib.contextmanager
def staged_writes(folder: str | Path, advice: str, files: str = "files"):
    """Yield a hidden temporary folder inside `folder` to write files into; when the block ends they are moved
    into `folder` one by one (`os.replace`: a file there is either its old or its new version, never partial),
    with the umask's normal mode (`normal_mode`).
    If the block fails, the temporary folder is removed at once and a storage failure becomes one StorageError
    naming the file (or, when the writer left none behind, `files`: what the block writes), the cause and
    `advice`; the files already in `folder` are untouched."""
    folder = Path(folder)
    stage = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".tmp-", dir=folder))
        yield stage
        for file in sorted(stage.iterdir()):
            normal_mode(file)
            os.replace(file, folder / file.name)
    except Exception as e:
        cause = storage_failure(e, folder)
        file = failed_file(e, stage) if stage else folder
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
        if cause is None:
            raise
        if file is None or stage is None:
            target = f"{files} into {folder}"
        else:
            target = folder / file.name if file.is_relative_to(stage) else file
        raise StorageError(f"could not write {target}: {cause}; nothing partial was kept. {advice}") from None
    finally:
        if stage is not None:
            shutil.rmtree(stage, ignore_errors=True)
