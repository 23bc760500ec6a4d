"""Polish a trained model at a higher resolution: re-estimate BatchNorm, fine-tune briefly, evaluate before/after.

    python polish.py --init outputs/food101-resnet18-192       # 192 -> 224 px, into outputs/food101-resnet18-192-224
    python polish.py --init org/food101-resnet18 --epochs 0    # only BN re-estimate + eval at the new size
    torchrun --nproc_per_node 2 polish.py --init outputs/demo  # several processes

--init is a folder written by train.py (or polish.py) or a Hub repo id; its model and weights are used, and
--dataset defaults to the dataset recorded there, read with the config, columns and hold-out recorded with it. The
defaults (the init's size x 224/192, 2 epochs, lr 1e-4, no Mixup) are explained in food101hf/config.py's
PolishConfig. Writes the same folder as train.py, with the new image_size in metrics.json and config.json's
pretrained_cfg, and the init's recipe as base_config.yaml; a polish that ends below the init's own top-1 says so in
the log, metrics.json (worse_than_init) and the model card.
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
    from food101hf.metrics import describe_scores
    from food101hf.outputs import (comparable_result, read_recipes, recorded_dataset, reuse_layout, served_size,
                                   trained_folder)
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
    # by default the init's size raised by FixRes's ratio (config.polish_size), into a folder named after both
    cfg = dataclasses.replace(cfg.resolved(served_size(init_dir)),
                              dataset=cfg.dataset or recorded_dataset(base["dataset"], base_recipe),
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
    logger.info(f"before the fine-tune, at {cfg.image_size} px: {describe_scores(before)}")
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
    metrics["before_polish"] = {key: before[key] for key in ("top1", "top1_ci95", "top5", "eval_loss")
                                if key in before}
    logger.info(f"top-1 {before['top1']:.4f} before the fine-tune, {metrics['top1']:.4f} after")
    # the init's own top-1 at its own size, on the same images: a polish that ends below it is said loudly
    # (export_run: the log, the exit summary; the model card); the polished model is still what gets exported
    if init_result := comparable_result(init_dir, splits.eval_split, metrics["num_eval_samples"]):
        metrics |= {"init": init_result, "worse_than_init": metrics["top1"] < init_result["top1"]}
    else:
        logger.info(f"{cfg.init} reports no top-1 on these {metrics['num_eval_samples']} {splits.eval_split} images "
                    f"(its metrics.json is missing or scored others): the polish is not compared with it")

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
