"""Fine-tune timm's ResNet-18 on Food-101 (or any image folder) with Accelerate.

    python train.py --config configs/demo.yaml                       # offline demo, into outputs/demo
    python train.py --config configs/food101.yaml                    # the real recipe, on one GPU
    python train.py --dataset my_food                                # your photos, into outputs/my_food
    torchrun --nproc_per_node 2 train.py --config configs/demo.yaml  # several processes (GPUs, or CPU with gloo)

Flags override the preset. Writes model.safetensors, config.json (timm's Hub format), metrics.json, README.md
(model card), train_config.yaml and report/ (error analysis) into --output-dir, and ends by saying what to run
next. A flag or path that cannot work is refused in one line before anything loads. `accelerate launch train.py`
starts the same run (docs/training.md: what each launcher adds).
"""

import food101hf  # noqa: F401  first: its OpenMP defaults must be set before torch loads OpenMP

import dataclasses
import logging

from food101hf.cli import run, setup_logging
from food101hf.config import TrainConfig, parse_config

logger = logging.getLogger("train")


def main(argv=None) -> int:
    setup_logging()
    cfg = parse_config(TrainConfig, argv, description=__doc__, prog="train.py")

    # the heavy libraries load once the flags are known to be good: --help and a bad flag answer in a blink
    import torch
    from timm.data import resolve_model_data_config

    from food101hf.checkpoint import start_or_resume
    from food101hf.data import describe_classes, load_splits
    from food101hf.engine import create_scheduler, fit, updates_per_epoch
    from food101hf.loaders import build_loaders
    from food101hf.model import check_model, count_parameters, create_model, create_optimizer, freeze
    from food101hf.report import report_run
    from food101hf.runs import check_run, export_run, start_run, write_recipe

    # setup: every check that needs no data runs before any data or weights load
    check_model(cfg)  # --model, --opt, --freeze against timm, on the meta device
    accelerator, threads = start_run(cfg)
    out, checkpoints = check_run(cfg, accelerator)  # a resume of other settings, a full disk: refused now
    logger.info(f"{accelerator.num_processes} process(es) on {accelerator.device}, "
                f"mixed precision {accelerator.mixed_precision}, {threads.count} torch thread(s) per process "
                f"({threads.reason})")

    # data: decoded and augmented on the fly; the label names come from the dataset's ClassLabel
    with accelerator.main_process_first():  # one process generates/caches; the others then read the cache
        splits = load_splits(cfg)
        data_identity = splits.identity()  # each file's hash, once per place the data lies (cached)
    num_classes = len(splits.label_names)
    logger.info(f"{cfg.dataset}: {len(splits.train)} train / {len(splits.eval)} eval images ({splits.eval_split})")
    logger.info(describe_classes(splits))

    # model: new head for our classes, early layers frozen, channels_last for the CPU/GPU conv kernels
    model = create_model(cfg, num_classes)
    freeze(model, cfg.freeze_modules())
    model.to(memory_format=torch.channels_last)
    trainable, total = count_parameters(model)
    start = cfg.model if cfg.pretrained else f"{cfg.model.partition('.')[0]} from scratch (random weights)"
    logger.info(f"{start}: {trainable:,} of {total:,} parameters trainable ({trainable / total:.0%}; frozen: "
                f"{cfg.freeze})")
    data_config = resolve_model_data_config(model)
    train_loader, eval_loader = build_loaders(splits, cfg, data_config, cfg.image_size, cfg.seed)

    # optimizer and schedule; the schedule is sized from the loader Accelerate hands back (per process)
    optimizer = create_optimizer(model, cfg)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    scheduler = create_scheduler(optimizer, cfg, updates_per_epoch(len(train_loader), cfg.grad_accum_steps),
                                 cfg.epochs)
    # resume: everything Accelerate saves (model, optimizer, RNGs) plus the registered scheduler and our progress;
    # the run's identity includes its data by content (each file's path in the dataset, class, size and hash)
    accelerator.register_for_checkpointing(scheduler)
    progress = start_or_resume(accelerator, cfg, splits.label_names, checkpoints, data_identity)
    write_recipe(accelerator, cfg, out, splits)  # the start succeeded: only now does the output folder get a file
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

    # export: timm Hub format (safetensors), metrics, model card; then optionally push, and say what is next
    export_run(accelerator, cfg, model, splits, splits.label_names, out, data_config, metrics,
               progress.train_seconds)
    return 0


if __name__ == "__main__":
    run(main)
