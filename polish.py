"""Polish a trained model at a higher resolution: re-estimate BatchNorm, fine-tune briefly, evaluate before/after.

    accelerate launch polish.py --init outputs/food101-resnet18-192 --output-dir outputs/food101-resnet18-224
    accelerate launch polish.py --init org/food101-resnet18 --epochs 0       # only BN re-estimate + eval at 224 px

--init is a folder written by train.py (or polish.py) or a Hub repo id; its model and weights are used, and
--dataset defaults to the dataset recorded there. The defaults (224 px, 2 epochs, lr 1e-4, no Mixup) are explained
in food101hf/config.py's PolishConfig. Writes the same folder as train.py, with the new image_size in metrics.json
and config.json's pretrained_cfg, and the init's recipe as base_config.yaml.
"""

import food101hf  # noqa: F401  first: its OpenMP defaults must be set before torch loads OpenMP

import dataclasses
import logging
import shutil
from pathlib import Path

import yaml

from food101hf.cli import next_steps, run, setup_logging
from food101hf.config import PolishConfig, parse_config, recorded_dataset

logger = logging.getLogger("polish")


def main(argv=None) -> int:
    setup_logging()
    cfg = parse_config(PolishConfig, argv, description=__doc__, prog="polish.py")

    # the heavy libraries load once the flags are known to be good: --help and a bad flag answer in a blink
    import torch
    from accelerate.utils import set_seed
    from timm.data import resolve_model_data_config

    from food101hf.checkpoint import check_resume, checkpoint_root, start_or_resume
    from food101hf.config import save_config
    from food101hf.data import DatasetError, build_loaders, build_transform, example_file, load_splits, with_transform
    from food101hf.engine import (create_accelerator, create_scheduler, evaluate_logits, fit, score_logits,
                                  updates_per_epoch)
    from food101hf.hub import push_run, write_outputs
    from food101hf.model import (check_model, count_parameters, create_optimizer, freeze, load_trained,
                                 reestimate_batchnorm, trained_folder)
    from food101hf.report import report_run
    from food101hf.runtime import describe_hardware, keep_freed_memory, set_num_threads
    from food101hf.storage import check_output_dir, room_warning

    keep_freed_memory()  # before any tensor: a step no longer page-faults its activations in (runtime.py)
    threads = set_num_threads()  # all usable cores, whichever launcher started us, unless the user chose
    accelerator = create_accelerator(cfg)
    set_seed(cfg.seed)

    # the model to polish, and the recipe it was trained with (its dataset is our default)
    with accelerator.main_process_first():  # one process downloads a Hub model; the others read the cache
        init_dir = trained_folder(cfg.init)
    base_recipe_file = init_dir / "train_config.yaml"
    base = yaml.safe_load(base_recipe_file.read_text()) if base_recipe_file.is_file() else {}
    if cfg.dataset is None and "dataset" not in base:
        raise ValueError(f"{cfg.init} records no dataset (no train_config.yaml): pass --dataset")
    cfg = dataclasses.replace(cfg, dataset=cfg.dataset or recorded_dataset(base["dataset"], base_recipe_file),
                              model=base.get("model", cfg.model))
    check_model(dataclasses.replace(cfg, pretrained=False))  # --freeze and --opt, before any data loads
    out = Path(cfg.output_dir)
    checkpoints = checkpoint_root(out)  # beside the output folder: that folder is the model, not training state
    check_resume(cfg, checkpoints, accelerator.num_processes)
    free = check_output_dir(out, cfg.model)  # writable, room for the export + a checkpoint
    if accelerator.is_main_process and (warning := room_warning(out, cfg.model, cfg.keep_checkpoints, free)):
        logger.warning(warning)
    model = load_trained(init_dir)
    base_size = model.pretrained_cfg["input_size"][-1]
    logger.info(f"polishing {cfg.init} ({model.pretrained_cfg['architecture']}, {base_size} px) at "
                f"{cfg.image_size} px on {accelerator.num_processes} process(es), mixed precision "
                f"{accelerator.mixed_precision}, {threads.count} torch thread(s) per process ({threads.reason})")

    # data: the init's classes, in the same order, or the head would mean something else
    with accelerator.main_process_first():
        splits = load_splits(cfg)
    label_names = list(model.pretrained_cfg["label_names"])
    if splits.label_names != label_names:
        def preview(names):
            return f"{len(names)}: {', '.join(names[:5])}{', ...' if len(names) > 5 else ''}"

        raise DatasetError(f"{cfg.dataset} has other classes ({preview(splits.label_names)}) than {cfg.init} was "
                           f"trained on ({preview(label_names)}), in that order: polish on the dataset it was "
                           f"trained on")
    # mean, std, interpolation and crop_pct come from the init's pretrained_cfg; only the size changes
    data_config = resolve_model_data_config(model)
    train_loader, eval_loader = build_loaders(splits, cfg, data_config, cfg.image_size, cfg.seed)
    if cfg.epochs and len(train_loader) == 0:
        raise DatasetError(f"{len(splits.train)} training images are fewer than one batch of {cfg.batch_size}: "
                           f"lower --batch-size")

    # BatchNorm re-estimate at the new size, on shuffled training images with the eval preprocessing (what the
    # model will see when served). Done on the plain model before `prepare`, with the same seeded batches in every
    # process, so all replicas get identical statistics without relying on DDP's broadcast.
    model.to(accelerator.device)
    if cfg.bn_reestimate:
        eval_transform = build_transform(data_config, cfg.image_size, False, normalize=False)
        bn_images = with_transform(splits.train, eval_transform, cfg.image_column, cfg.label_column)
        bn_loader = torch.utils.data.DataLoader(bn_images, batch_size=cfg.batch_size, shuffle=True,
                                                num_workers=cfg.num_workers,
                                                generator=torch.Generator().manual_seed(cfg.seed))
        used = reestimate_batchnorm(model, bn_loader, cfg.bn_batches, accelerator.device)
        logger.info(f"BatchNorm statistics re-estimated at {cfg.image_size} px on {used} training images")

    # then the same freezing as train.py (frozen BatchNorms keep the statistics just estimated)
    freeze(model, cfg.freeze_modules())
    model.to(memory_format=torch.channels_last)
    trainable, total = count_parameters(model)
    logger.info(f"{trainable:,} of {total:,} parameters trainable (frozen: {cfg.freeze})")
    optimizer = create_optimizer(model, cfg)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)

    # the start succeeded: only now does the output folder get its first files (a failed start leaves nothing)
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        save_config(cfg, out / "train_config.yaml")
        if base:
            shutil.copyfile(base_recipe_file, out / "base_config.yaml")

    # evaluate at the new size before the fine-tune, fine-tune, evaluate again (fit does after every epoch)
    last_evaluation = evaluate_logits(accelerator, model, eval_loader,
                                      desc=f"eval at {cfg.image_size} px before polish")
    before = score_logits([last_evaluation])
    logger.info(f"before polish at {cfg.image_size} px: top-1 {before['top1']:.4f} top-5 {before['top5']:.4f}")
    if cfg.epochs > 0:
        scheduler = create_scheduler(optimizer, cfg, updates_per_epoch(len(train_loader), cfg.grad_accum_steps),
                                     cfg.epochs)
        accelerator.register_for_checkpointing(scheduler)
        progress = start_or_resume(accelerator, cfg, label_names, checkpoints, splits.identity())
        metrics, last_evaluation = fit(accelerator, model, optimizer, scheduler, train_loader, eval_loader, cfg,
                                       len(label_names), progress, checkpoints)
    else:
        metrics = before | {"epoch": 0}
    metrics["before_polish"] = {key: before[key] for key in ("top1", "top5", "eval_loss")}
    report_run(accelerator, cfg, model, eval_loader, label_names, out, splits.eval_split, last_evaluation)
    # the loaders' persistent workers are shut down here: left to the interpreter's exit, they get multiprocessing's
    # SIGTERM, which torch reports as `DataLoader worker ... exited unexpectedly` after a run that succeeded
    train_loader, eval_loader = accelerator.free_memory(train_loader, eval_loader)
    accelerator.end_training()

    # export at the new size (config.json's input and test input size), then optionally push
    if accelerator.is_main_process:
        metrics |= {"eval_split": splits.eval_split, "mixed_precision": accelerator.mixed_precision,
                    "hardware": describe_hardware(accelerator.device, accelerator.num_processes)}
        if cfg.epochs > 0:
            metrics["train_seconds"] = round(progress.train_seconds, 1)
        write_outputs(out, accelerator.unwrap_model(model), label_names, data_config, cfg.image_size, metrics)
        logger.info(f"top-1 {before['top1']:.4f} -> {metrics['top1']:.4f} at {cfg.image_size} px; model saved to "
                    f"{out.resolve()}")
        if cfg.push_to_hub:
            logger.info(f"pushed to {push_run(out, cfg)}")
        print(next_steps(out, cfg, example_file(splits.eval, cfg.image_column)), flush=True)
    return 0


if __name__ == "__main__":
    run(main)
