"""Fine-tune timm's ResNet-18 on Food-101 (or any image folder) with Accelerate.

    accelerate launch --config_file accelerate_config.yaml train.py --config configs/demo.yaml   # offline demo
    accelerate launch train.py --config configs/food101.yaml                                      # the real recipe
    accelerate launch train.py --dataset my_food --output-dir outputs/my_food                     # your photos
    torchrun --nproc_per_node 2 train.py --config configs/demo.yaml                               # 2 CPU processes

Flags override the preset. Writes model.safetensors, config.json (timm's Hub format), metrics.json, README.md
(model card), train_config.yaml and report/ (error analysis) into --output-dir, and ends by saying what to run
next. A flag that cannot work is refused in one line before anything loads.
"""

import food101hf  # noqa: F401  first: its OpenMP defaults must be set before torch loads OpenMP

import dataclasses
import logging
from pathlib import Path

from food101hf.cli import next_steps, run, setup_logging
from food101hf.config import TrainConfig, parse_config

logger = logging.getLogger("train")


def main(argv=None) -> int:
    setup_logging()
    cfg = parse_config(TrainConfig, argv, description=__doc__, prog="train.py")

    # the heavy libraries load once the flags are known to be good: --help and a bad flag answer in a blink
    import torch
    from accelerate.utils import set_seed
    from timm.data import resolve_model_data_config

    from food101hf.checkpoint import check_resume, checkpoint_root, start_or_resume
    from food101hf.config import save_config
    from food101hf.data import DatasetError, build_loaders, example_file, load_splits
    from food101hf.engine import create_accelerator, create_scheduler, fit, updates_per_epoch
    from food101hf.hub import push_run, write_outputs
    from food101hf.model import check_model, count_parameters, create_model, create_optimizer, freeze
    from food101hf.report import report_run
    from food101hf.runtime import describe_hardware, keep_freed_memory, set_num_threads
    from food101hf.storage import check_output_dir, room_warning

    check_model(cfg)  # --model, --opt, --freeze against timm, before any weights or data load
    keep_freed_memory()  # before any tensor: a step no longer page-faults its activations in (runtime.py)
    threads = set_num_threads()  # all usable cores, whichever launcher started us, unless the user chose
    accelerator = create_accelerator(cfg)
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    checkpoints = checkpoint_root(out)  # beside the output folder: that folder is the model, not training state
    check_resume(cfg, checkpoints, accelerator.num_processes)  # a checkpoint of other settings: refused now
    free = check_output_dir(out, cfg.model)  # writable, room for the export + a checkpoint: before any download
    if accelerator.is_main_process and (warning := room_warning(out, cfg.model, cfg.keep_checkpoints, free)):
        logger.warning(warning)
    logger.info(f"{accelerator.num_processes} process(es) on {accelerator.device}, "
                f"mixed precision {accelerator.mixed_precision}, {threads.count} torch thread(s) per process "
                f"({threads.reason})")

    # data: decoded and augmented on the fly; the label names come from the dataset's ClassLabel
    with accelerator.main_process_first():  # one process generates/caches; the others then read the cache
        splits = load_splits(cfg)
    num_classes = len(splits.label_names)
    logger.info(f"{cfg.dataset}: {len(splits.train)} train / {len(splits.eval)} eval images "
                f"({splits.eval_split}), {num_classes} classes")

    # model: new head for our classes, early layers frozen, channels_last for the CPU/GPU conv kernels
    model = create_model(cfg, num_classes)
    freeze(model, cfg.freeze_modules())
    model.to(memory_format=torch.channels_last)
    trainable, total = count_parameters(model)
    logger.info(f"{cfg.model}: {trainable:,} of {total:,} parameters trainable "
                f"({trainable / total:.0%}; frozen: {cfg.freeze})")
    data_config = resolve_model_data_config(model)
    train_loader, eval_loader = build_loaders(splits, cfg, data_config, cfg.image_size, cfg.seed)
    if len(train_loader) == 0:
        raise DatasetError(f"{len(splits.train)} training images are fewer than one batch of {cfg.batch_size}: "
                           f"lower --batch-size")

    # optimizer and schedule; the schedule is sized from the loader Accelerate hands back (per process)
    optimizer = create_optimizer(model, cfg)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    scheduler = create_scheduler(optimizer, cfg, updates_per_epoch(len(train_loader), cfg.grad_accum_steps),
                                 cfg.epochs)
    # resume: everything Accelerate saves (model, optimizer, RNGs) plus the registered scheduler and our progress;
    # the run's identity includes its data (split sizes and datasets' fingerprints)
    accelerator.register_for_checkpointing(scheduler)
    progress = start_or_resume(accelerator, cfg, splits.label_names, checkpoints, splits.identity())
    # the start succeeded: only now does the output folder get its first file (a failed start leaves nothing)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "train_config.yaml")
    if cfg.report_to:
        accelerator.init_trackers("food101hf", config={k: v for k, v in dataclasses.asdict(cfg).items()
                                                       if isinstance(v, (int, float, str, bool))})

    # train, evaluating and checkpointing after every epoch
    metrics, last_evaluation = fit(accelerator, model, optimizer, scheduler, train_loader, eval_loader, cfg,
                                   num_classes, progress, checkpoints)

    # error analysis of the final model, from the last epoch's evaluation; the main process writes report/
    # (before end_training, which takes the process group down, and before the model card, which shows it)
    report_run(accelerator, cfg, model, eval_loader, splits.label_names, out, splits.eval_split, last_evaluation)
    # the loaders' persistent workers are shut down here: left to the interpreter's exit, they get multiprocessing's
    # SIGTERM, which torch reports as `DataLoader worker ... exited unexpectedly` after a run that succeeded
    train_loader, eval_loader = accelerator.free_memory(train_loader, eval_loader)
    accelerator.end_training()

    # export: timm Hub format (safetensors), metrics, model card; then optionally push
    if accelerator.is_main_process:
        metrics |= {"eval_split": splits.eval_split, "skipped_files": len(splits.skipped),
                    "train_seconds": round(progress.train_seconds, 1), "mixed_precision": accelerator.mixed_precision,
                    "hardware": describe_hardware(accelerator.device, accelerator.num_processes)}
        write_outputs(out, accelerator.unwrap_model(model), splits.label_names, data_config, cfg.image_size,
                      metrics)
        logger.info(f"top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}; model saved to {out.resolve()}")
        if cfg.push_to_hub:
            logger.info(f"pushed to {push_run(out, cfg)}")
        print(next_steps(out, cfg, example_file(splits.eval, cfg.image_column)), flush=True)
    return 0


if __name__ == "__main__":
    run(main)
