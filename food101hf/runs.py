"""The start and the end that train.py and polish.py share, as plain functions, so that each script keeps only its
own steps (no Trainer class, no callbacks):

    accelerator, threads = start_run(cfg)          # allocator, threads, Accelerator, seed
    out, checkpoints = check_run(cfg, accelerator)  # a resume of other settings, a full disk: refused now
    ...                                             # the script's data, model, training, report
    write_recipe(accelerator, cfg, out, splits)     # once the start succeeded: the folder's first file
    export_run(accelerator, cfg, model, ...)        # weights, config, metrics.json, model card; push; next steps
"""

from __future__ import annotations

import dataclasses
import logging
import shlex
from pathlib import Path

from accelerate import Accelerator
from accelerate.utils import set_seed

from .checkpoint import check_resume, checkpoint_root
from .config import PolishConfig, TrainConfig, polish_size
from .data import Splits, example_file, images_per_class
from .engine import create_accelerator
from .hub_access import PLACEHOLDER
from .metrics import describe_scores, small_eval_warning
from .outputs import copy_recipe, polish_verdict, save_config
from .publish import push_run, write_outputs
from .runtime import Threads, describe_hardware, keep_freed_memory, launcher_command, set_num_threads
from .storage import check_output_dir, room_warning

logger = logging.getLogger(__name__)
# the settings that decide a run's data and batches: the printed polish step repeats those this run changed, so that
# it runs where this run ran and evaluates on the same images (polish.py reads the dataset, its config, columns and
# --val-fraction from the init itself: `outputs.reuse_layout`)
SAME_DATA = ("batch_size", "seed", "max_train_samples", "max_eval_samples")


def start_run(cfg: TrainConfig) -> tuple[Accelerator, Threads]:
    """The process set up for training: glibc keeps freed memory (before any tensor: a step no longer
    page-faults its activations in, `runtime.keep_freed_memory`), torch gets the usable cores whichever launcher
    started us, unless the user chose (`runtime.set_num_threads`), the Accelerator (precision, processes) and the
    seed."""
    keep_freed_memory()
    threads = set_num_threads()
    accelerator = create_accelerator(cfg)
    set_seed(cfg.seed)
    return accelerator, threads


def check_run(cfg: TrainConfig, accelerator: Accelerator) -> tuple[Path, Path]:
    """(the output folder, its checkpoint folder beside it), after refusing, before any data or weights load, a
    --resume checkpoint of other settings (CheckpointError) and an output folder that cannot be written or has no
    room for the export and one checkpoint (StorageError); room for fewer than --keep-checkpoints is a warning.
    Creates nothing: a failed start leaves nothing behind."""
    out = Path(cfg.output_dir)
    checkpoints = checkpoint_root(out)  # beside the output folder: that folder is the model, not training state
    check_resume(cfg, checkpoints, accelerator.num_processes)
    free = check_output_dir(out, cfg.model)
    if accelerator.is_main_process and (warning := room_warning(out, cfg.model, cfg.keep_checkpoints, free)):
        logger.warning(warning)
    return out, checkpoints


def write_recipe(accelerator: Accelerator, cfg: TrainConfig, out: Path, splits: Splits,
                 base_recipe: Path | None = None) -> None:
    """The output folder's first files, once the start succeeded: train_config.yaml (the resolved recipe, with the
    dataset config and columns as read, and its provenance, the split roles included) and, after a polish, the
    init's recipe as base_config.yaml."""
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(dataclasses.replace(cfg, **splits.layout.recorded()), out / "train_config.yaml",
                    notes=[f"dataset splits: {splits.layout.describe_splits()}; evaluated on: {splits.eval_split}"])
        if base_recipe is not None:
            copy_recipe(base_recipe, out / "base_config.yaml")


def export_run(accelerator: Accelerator, cfg: TrainConfig, model, splits: Splits, label_names: list[str], out: Path,
               data_config: dict, metrics: dict, train_seconds: float | None) -> None:
    """On the main process: the model in timm's Hub format, metrics.json (with what ran: eval split, bad files
    skipped, training time, precision, hardware; `eval_warning` when the eval split is too small to tell models
    apart) and the model card (`publish.write_outputs`); the push with --push-to-hub; then what the run made, any
    warning, and what to run next, on stdout."""
    if not accelerator.is_main_process:
        return
    metrics |= {"image_size": cfg.image_size, "eval_split": splits.eval_split, "skipped_files": len(splits.skipped),
                "mixed_precision": accelerator.mixed_precision,
                "hardware": describe_hardware(accelerator.device, accelerator.num_processes)}
    counts = images_per_class(splits.eval, len(label_names))
    if eval_warning := small_eval_warning(metrics["top1_ci95"], counts):
        metrics["eval_warning"] = eval_warning
    if train_seconds is not None:
        metrics["train_seconds"] = round(train_seconds, 1)
    write_outputs(out, accelerator.unwrap_model(model), label_names, data_config, cfg.image_size, metrics)
    logger.info(f"{describe_scores(metrics)} at {cfg.image_size} px on {metrics['num_eval_samples']} "
                f"{splits.eval_split} images; model saved to {out.resolve()}")
    warnings = [w for w in (eval_warning, polish_verdict(metrics, getattr(cfg, "init", None))) if w]
    for warning in warnings:
        logger.warning(warning)
    if cfg.push_to_hub:
        logger.info(f"pushed to {push_run(out, cfg)}")
    print(next_steps(out, cfg, example_file(splits.eval), warnings), flush=True)


def next_steps(out: Path, cfg, example_image: str | None, warnings: list[str] = ()) -> str:
    """What a train.py/polish.py run made, its warnings, and what to run next, for a person at the console: a
    predict command on one of the run's own eval images (ready to paste), polishing after train.py (started as
    this run was, `runtime.launcher_command`, at `config.polish_size`), sharing (unless pushed)."""
    folder, image = shlex.quote(str(out)), shlex.quote(example_image) if example_image else "YOUR_PHOTO.jpg"
    lines = [f"\nDone. In {out}/:",
             f"  model.safetensors, config.json   the model in timm's format: "
             f"timm.create_model(\"local-dir:{out}\", pretrained=True)",
             "  metrics.json                     top-1 (with its 95% interval) on the eval split, per epoch",
             "  README.md                        the model card"]
    if cfg.report:
        lines.append("  report/report.md                 error analysis: per-class accuracy, confused pairs, "
                     "confident mistakes")
    lines += [f"Warning: {warning}." for warning in warnings]
    lines += ["Next:", f"  python -m food101hf.predict --model {folder} {image}"
              + ("   # an image of the eval split" if example_image else "")]
    if getattr(cfg, "init", None) is None:
        size, defaults = polish_size(cfg.image_size), PolishConfig(init=str(out))
        # polish.py reads the dataset from the init; what else chose this run's data and batches is passed on
        same = [f"--{name.replace('_', '-')} {shlex.quote(str(getattr(cfg, name)))}" for name in SAME_DATA
                if getattr(cfg, name) != getattr(defaults, name)]
        lines.append(f"  {' '.join([launcher_command('polish.py'), '--init', folder, *same])}   # FixRes: fine-tune "
                     f"briefly at {size} px ({cfg.image_size} px x 224/192) into {out}-{size}")
    if not cfg.push_to_hub:
        lines.append(f"  python -m food101hf.hub push {folder} {PLACEHOLDER}/{out.name}   # share it (needs HF_TOKEN)")
    if cfg.dataset == "demo":
        lines.append("Note: the demo dataset is synthetic (generated drawings of 10 dishes, food101hf/demo.py): its "
                     "top-1 shows the pipeline works, not how a model does on real food photos.")
    return "\n".join(lines)
