"""Fine-tune timm's ResNet-18 on Food-101 (or any image folder) with Accelerate.

    accelerate launch --config_file accelerate_config.yaml train.py --config configs/demo.yaml   # offline demo
    accelerate launch train.py --config configs/food101.yaml                                      # the real recipe
    torchrun --nproc_per_node 2 train.py --config configs/demo.yaml                               # 2 CPU processes

Flags override the preset; `python train.py --help` lists them. Writes model.safetensors, config.json (timm's
Hub format), metrics.json, README.md (model card) and train_config.yaml into --output-dir.
"""

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, set_seed
from timm.data import resolve_model_data_config

from food101hf.config import TrainConfig, parse_config, save_config
from food101hf.data import DatasetError, build_loaders, load_splits
from food101hf.engine import (create_mixup, create_scheduler, evaluate_model, resolve_mixed_precision,
                              train_criterion, train_one_epoch, updates_per_epoch)
from food101hf.hub import HubError, build_card, export_model, push_folder
from food101hf.model import count_parameters, create_model, create_optimizer, freeze

logger = get_logger("train")


def main(argv=None) -> int:
    cfg = parse_config(TrainConfig, argv, description=__doc__)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    accelerator = Accelerator(
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        gradient_accumulation_steps=cfg.grad_accum_steps,
        log_with=cfg.report_to,
        project_dir=cfg.output_dir,
        # the sampler's order then depends only on (seed, epoch), on every process: what exact resume needs
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    set_seed(cfg.seed)
    out = Path(cfg.output_dir)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "train_config.yaml")
    logger.info(f"{accelerator.num_processes} process(es) on {accelerator.device}, "
                f"mixed precision {accelerator.mixed_precision}")

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
    steps_per_epoch = updates_per_epoch(len(train_loader), cfg.grad_accum_steps)
    scheduler = create_scheduler(optimizer, cfg, steps_per_epoch, cfg.epochs)
    mixup = create_mixup(cfg, num_classes)
    criterion = train_criterion(mixup, cfg.smoothing)
    if cfg.report_to:
        accelerator.init_trackers("food101hf", config={k: v for k, v in dataclasses.asdict(cfg).items()
                                                       if isinstance(v, (int, float, str, bool))})

    # train: evaluate after every epoch
    num_updates, train_seconds, train_images = 0, 0.0, 0
    for epoch in range(cfg.epochs):
        start = time.perf_counter()
        num_updates, images_per_second = train_one_epoch(accelerator, model, train_loader, optimizer, scheduler,
                                                         criterion, mixup, cfg, epoch, num_updates)
        train_seconds += time.perf_counter() - start
        train_images += len(train_loader) * cfg.batch_size * accelerator.num_processes
        metrics = evaluate_model(accelerator, model, eval_loader)
        logger.info(f"epoch {epoch + 1}: top-1 {metrics['top1']:.4f} top-5 {metrics['top5']:.4f} "
                    f"loss {metrics['eval_loss']:.4f} ({images_per_second:.1f} img/s per process)")
        accelerator.log({f"eval/{k}": v for k, v in metrics.items()} | {"epoch": epoch + 1}, step=num_updates)
    accelerator.end_training()

    # export: timm Hub format (safetensors), metrics, model card; then optionally push
    if accelerator.is_main_process:
        export_model(accelerator.unwrap_model(model), out, splits.label_names, cfg.image_size,
                     data_config["crop_pct"])
        metrics |= {"image_size": cfg.image_size, "epoch": cfg.epochs, "eval_split": splits.eval_split,
                    "train_images_per_second": round(train_images / max(train_seconds, 1e-9), 2)}
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        build_card(out).save(out / "README.md")
        logger.info(f"top-1 {metrics['top1']:.4f}, top-5 {metrics['top5']:.4f}; model saved to {out.resolve()}")
        if cfg.push_to_hub:
            url = push_folder(out, cfg.push_to_hub, private=cfg.hub_private, revision=cfg.hub_revision)
            logger.info(f"pushed to {url}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (DatasetError, HubError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
