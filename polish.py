"""Polish a trained model at a higher resolution: re-estimate BatchNorm, fine-tune briefly, evaluate before/after.

    accelerate launch polish.py --init outputs/food101-resnet18-192 --output-dir outputs/food101-resnet18-224
    accelerate launch polish.py --init org/food101-resnet18 --epochs 0       # only BN re-estimate + eval at 224 px

--init is a folder written by train.py (or polish.py) or a Hub repo id; its model and weights are used, and
--dataset defaults to the dataset recorded there, read with the config and columns recorded with it. The defaults
(224 px, 2 epochs, lr 1e-4, no Mixup) are explained in food101hf/config.py's PolishConfig. Writes the same folder as
train.py, with the new image_size in metrics.json and config.json's pretrained_cfg, and the init's recipe as
base_config.yaml.
"""

import food101hf  # noqa: F401  first: its OpenMP defaults must be set before torch loads OpenMP

import dataclasses
import logging

from food101hf.cli import run, setup_logging
from food101hf.config import PolishConfig, parse_config

logger = logging.getLogger("polish")


def main(argv=None) -> int:
    setup_logging()
    cfg = parse_config(PolishConfig, argv, description=__doc__, prog="polish.py")

    # the heavy libraries load once the flags are known to be good: --help and a bad flag answer in a blink
    import torch
    from timm.data import resolve_model_data_config

    from food101hf.checkpoint import start_or_resume
    from food101hf.data import check_classes, load_splits
    from food101hf.engine import create_scheduler, evaluate_logits, fit, score_logits, updates_per_epoch
    from food101hf.errors import ConfigError
    from food101hf.loaders import batchnorm_loader, build_loaders
    from food101hf.model import (check_model, count_parameters, create_optimizer, freeze, load_trained,
                                 reestimate_batchnorm)
    from food101hf.outputs import read_recipes, recorded_dataset, reuse_layout, trained_folder
    from food101hf.report import report_run
    from food101hf.runs import check_run, export_run, start_run, write_recipe

    accelerator, threads = start_run(cfg)

    # the model to polish, and the recipe it was trained with (its dataset and model are ours)
    with accelerator.main_process_first():  # one process downloads a Hub model; the others read the cache
        init_dir = trained_folder(cfg.init)
    base_recipe = init_dir / "train_config.yaml"
    base = read_recipes(init_dir)[0] if base_recipe.is_file() else {}
    if cfg.dataset is None and "dataset" not in base:
        raise ConfigError(f"{cfg.init} records no dataset (no train_config.yaml): pass --dataset")
    cfg = dataclasses.replace(cfg, dataset=cfg.dataset or recorded_dataset(base["dataset"], base_recipe),
                              model=base.get("model", cfg.model))
    cfg = reuse_layout(cfg, base, init_dir)  # on the init's dataset: its config, columns and hold-out
    check_model(dataclasses.replace(cfg, pretrained=False))  # --freeze and --opt, before any data loads
    out, checkpoints = check_run(cfg, accelerator)  # a resume of other settings, a full disk: refused now
    model = load_trained(init_dir)
    logger.info(f"polishing {cfg.init} ({model.pretrained_cfg['architecture']}, "
                f"{model.pretrained_cfg['input_size'][-1]} px) at {cfg.image_size} px on {accelerator.num_processes} "
                f"process(es), mixed precision {accelerator.mixed_precision}, {threads.count} torch thread(s) per "
                f"process ({threads.reason})")

    # data: the init's classes, in the same order, or the head would mean something else
    with accelerator.main_process_first():
        splits = load_splits(cfg)
        data_identity = splits.identity() if cfg.epochs > 0 else None  # for resume (see train.py)
    label_names = list(model.pretrained_cfg["label_names"])
    check_classes(cfg.dataset, splits.label_names, cfg.init, label_names, "polish on the dataset it was trained on")
    # mean, std, interpolation and crop_pct come from the init's pretrained_cfg; only the size changes
    data_config = resolve_model_data_config(model)
    train_loader, eval_loader = build_loaders(splits, cfg, data_config, cfg.image_size, cfg.seed)

    # BatchNorm re-estimate at the new size, on shuffled training images with the eval preprocessing (what the
    # model will see when served), on the plain model before `prepare`, with the same batches in every process
    model.to(accelerator.device)
    if cfg.bn_reestimate:
        bn_loader = batchnorm_loader(splits, cfg, data_config, cfg.image_size)
        used = reestimate_batchnorm(model, bn_loader, cfg.bn_batches, accelerator.device)
        logger.info(f"BatchNorm statistics re-estimated at {cfg.image_size} px on {used} training images")

    # then the same freezing as train.py (frozen BatchNorms keep the statistics just estimated)
    freeze(model, cfg.freeze_modules())
    model.to(memory_format=torch.channels_last)
    trainable, total = count_parameters(model)
    logger.info(f"{trainable:,} of {total:,} parameters trainable (frozen: {cfg.freeze})")
    optimizer = create_optimizer(model, cfg)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    write_recipe(accelerator, cfg, out, splits, base_recipe if base else None)  # the start succeeded: the first files

    # evaluate at the new size before the fine-tune, fine-tune, evaluate again (fit does after every epoch)
    last_evaluation = evaluate_logits(accelerator, model, eval_loader,
                                      desc=f"eval at {cfg.image_size} px before polish")
    before = score_logits([last_evaluation])
    logger.info(f"before polish at {cfg.image_size} px: top-1 {before['top1']:.4f} top-5 {before['top5']:.4f}")
    progress = None
    if cfg.epochs > 0:
        scheduler = create_scheduler(optimizer, cfg, updates_per_epoch(len(train_loader), cfg.grad_accum_steps),
                                     cfg.epochs)
        accelerator.register_for_checkpointing(scheduler)
        progress = start_or_resume(accelerator, cfg, label_names, checkpoints, data_identity)
        metrics, last_evaluation = fit(accelerator, model, optimizer, scheduler, train_loader, eval_loader, cfg,
                                       len(label_names), progress, checkpoints)
    else:
        metrics = before | {"epoch": 0}
    metrics["before_polish"] = {key: before[key] for key in ("top1", "top5", "eval_loss")}
    logger.info(f"top-1 {before['top1']:.4f} before the fine-tune, {metrics['top1']:.4f} after")

    # error analysis of the polished model, then the loaders' workers and the process group end (see train.py)
    report_run(accelerator, cfg, model, eval_loader, label_names, out, splits.eval_split, last_evaluation)
    train_loader, eval_loader = accelerator.free_memory(train_loader, eval_loader)
    accelerator.end_training()

    # export at the new size (config.json's input and test input size), then optionally push, and say what is next
    export_run(accelerator, cfg, model, splits, label_names, out, data_config, metrics,
               progress.train_seconds if progress else None)
    return 0


if __name__ == "__main__":
    run(main)
