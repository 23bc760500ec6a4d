"""The training and evaluation loops, driven by Accelerate; shared by train.py and polish.py."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration
from timm.data import Mixup
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler
from tqdm.auto import tqdm

from .checkpoint import Progress, save_checkpoint
from .config import TrainConfig
from .device_data import device_batches
from .metrics import load_topk_accuracy
from .preemption import StopOnSignal
from .runtime import cpu_has_native_bf16
from .transforms import model_input

logger = logging.getLogger(__name__)  # other processes than the main one log errors only (cli.setup_logging)


def resolve_mixed_precision(choice: str) -> str:
    """'auto' keeps a precision chosen in the Accelerate config, else picks the fastest safe one here."""
    if choice != "auto":
        return choice
    from_launcher = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")
    if from_launcher != "no":
        return from_launcher
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "bf16" if cpu_has_native_bf16() else "no"


def create_accelerator(cfg: TrainConfig) -> Accelerator:
    # under torchrun without GPUs, Accelerate sets up gloo only when told the run is on the CPU
    cpu_processes = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
    return Accelerator(
        cpu=cpu_processes,
        mixed_precision=resolve_mixed_precision(cfg.mixed_precision),
        gradient_accumulation_steps=cfg.grad_accum_steps,
        log_with=cfg.report_to,
        project_dir=cfg.output_dir,
        # the sampler's order then depends only on (seed, epoch), on every process: what exact resume needs
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )


def create_mixup(cfg: TrainConfig, num_classes: int) -> Mixup | None:
    """timm Mixup/CutMix with the class count and smoothing passed explicitly (its defaults assume ImageNet)."""
    if cfg.mixup <= 0 and cfg.cutmix <= 0:
        return None
    return Mixup(mixup_alpha=cfg.mixup, cutmix_alpha=cfg.cutmix, label_smoothing=cfg.smoothing,
                 num_classes=num_classes)


def train_criterion(mixup: Mixup | None, smoothing: float) -> torch.nn.Module:
    """Soft targets under Mixup (smoothing is then inside the targets), else smoothed or plain cross-entropy."""
    if mixup is not None:
        return SoftTargetCrossEntropy()
    return LabelSmoothingCrossEntropy(smoothing) if smoothing > 0 else torch.nn.CrossEntropyLoss()


def create_scheduler(optimizer, cfg: TrainConfig, updates_per_epoch: int, epochs: int) -> CosineLRScheduler:
    """Linear warmup then cosine to min_lr, in optimizer updates. `updates_per_epoch` must count updates, not
    batches: it is the per-process loader length divided by the accumulation steps, which is the same number on
    every process. timm's scheduler is not wrapped by Accelerate, so it steps exactly once per update."""
    total = updates_per_epoch * epochs
    warmup = min(round(cfg.warmup_epochs * updates_per_epoch), total - 1)
    return CosineLRScheduler(optimizer, t_initial=total - warmup, lr_min=cfg.min_lr, warmup_t=warmup,
                             warmup_lr_init=cfg.lr / 100, warmup_prefix=True, t_in_epochs=False)


def updates_per_epoch(num_batches: int, grad_accum_steps: int) -> int:
    """Accelerate also syncs (and so updates) on the last batch of an epoch, so a partial window counts."""
    return math.ceil(num_batches / grad_accum_steps)


def train_one_epoch(accelerator: Accelerator, model, loader, optimizer, scheduler, criterion, mixup,
                    cfg: TrainConfig, progress: Progress, checkpoint: Callable[[], None],
                    stop: StopOnSignal | None = None) -> float:
    """One pass over `loader` (which may skip the batches a resumed epoch already did), updating `progress` in
    place and calling `checkpoint()` every cfg.checkpoint_every updates. Ends early, after an optimizer update,
    when `stop` says every process received (or was told of) a stop signal, except at the epoch's last update:
    the epoch's evaluation and checkpoint come first there. Returns this process's images/s."""
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    pretrained_cfg = accelerator.unwrap_model(model).pretrained_cfg  # the mean and std to normalise with
    batches = device_batches(loader, accelerator, pretrained_cfg["mean"], pretrained_cfg["std"])
    progress_bar = tqdm(batches, desc=f"epoch {progress.epoch + 1}/{cfg.epochs}", initial=progress.batches_done,
                        total=progress.batches_done + len(loader), disable=not accelerator.is_local_main_process,
                        dynamic_ncols=True)
    seen, start = 0, time.perf_counter()
    for batch in progress_bar:
        images = model_input(batch["pixel_values"], pretrained_cfg["mean"], pretrained_cfg["std"])
        targets = batch["label"]
        if mixup is not None:
            images, targets = mixup(images, targets)
        with accelerator.accumulate(model):
            loss = criterion(model(images), targets)
            accelerator.backward(loss)
            if accelerator.sync_gradients and cfg.clip_grad:
                accelerator.clip_grad_norm_(trainable, cfg.clip_grad)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        seen += len(images)
        progress.batches_done += 1
        if accelerator.sync_gradients:
            progress.num_updates += 1
            scheduler.step_update(progress.num_updates)
            at_epoch_end = accelerator.gradient_state.end_of_dataloader  # fit checkpoints there after eval
            if stop is not None and stop.requested() and not at_epoch_end:
                break
            if cfg.checkpoint_every and progress.num_updates % cfg.checkpoint_every == 0 and not at_epoch_end:
                checkpoint()
        progress_bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}",
                                 img_s=f"{seen / (time.perf_counter() - start):.1f}")
    return seen / (time.perf_counter() - start)


@torch.inference_mode()
def gathered_logits(accelerator: Accelerator, model, loader, desc: str = "eval", tta: bool = False):
    """Yield (logits, labels) per batch, gathered from every process with `gather_for_metrics`, which drops the
    samples a distributed sampler repeats to even out the last batch: every eval image exactly once. Accelerate
    shards an unshuffled loader batch by batch in process order, so the gathered rows follow the dataset's order.
    With `tta`, the logits are the mean over the image and its horizontal mirror."""
    model.eval()
    pretrained_cfg = accelerator.unwrap_model(model).pretrained_cfg
    batches = device_batches(loader, accelerator, pretrained_cfg["mean"], pretrained_cfg["std"])
    for batch in tqdm(batches, desc=desc, total=len(loader), disable=not accelerator.is_local_main_process,
                      dynamic_ncols=True):
        images = model_input(batch["pixel_values"], pretrained_cfg["mean"], pretrained_cfg["std"])
        logits = model(images).float()
        if tta:
            logits = (logits + model(images.flip(-1)).float()) / 2
        yield accelerator.gather_for_metrics((logits, batch["label"]))


def ranked_predictions(logits: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The k best classes per row, best first; column 0 is the top-1 prediction every metric here counts."""
    return logits.topk(min(k, logits.shape[-1]), dim=-1).indices


def score_logits(batches) -> dict:
    """Top-1 and top-5 through the shipped `evaluate` module, and mean cross-entropy, over (logits, labels)
    batches."""
    metric = load_topk_accuracy()
    loss_sum, count = 0.0, 0
    for logits, labels in batches:
        metric.add_batch(predictions=ranked_predictions(logits).cpu().tolist(), references=labels.cpu().tolist())
        loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
        count += len(labels)
    return {**metric.compute(k=[1, 5]), "eval_loss": loss_sum / count, "num_eval_samples": count}


def evaluate_logits(accelerator: Accelerator, model, loader, desc: str = "eval",
                    tta: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits N x C, labels N) of every eval image exactly once, on the CPU and in the dataset's order, on every
    process: what both the metrics and the report are computed from (101 classes x 25,250 images is 10 MB)."""
    batches = list(gathered_logits(accelerator, model, loader, desc, tta))
    return torch.cat([b[0] for b in batches]).cpu(), torch.cat([b[1] for b in batches]).cpu()


def evaluate_model(accelerator: Accelerator, model, loader, desc: str = "eval", tta: bool = False) -> dict:
    """Top-1, top-5 and mean cross-entropy over every eval image exactly once."""
    return score_logits([evaluate_logits(accelerator, model, loader, desc, tta)])


def fit(accelerator: Accelerator, model, optimizer, scheduler, train_loader, eval_loader, cfg: TrainConfig,
        num_classes: int, progress: Progress,
        checkpoints: Path) -> tuple[dict, tuple[torch.Tensor, torch.Tensor]]:
    """Train from `progress` (fresh or restored) to cfg.epochs with Mixup/CutMix, evaluating and checkpointing
    after every epoch. Returns the last evaluation's metrics, the epoch count, the optimizer update count and the
    training throughput (images/s over all processes); and that evaluation's (logits, labels), which the report
    of the final model reuses instead of evaluating it again."""
    mixup = create_mixup(cfg, num_classes)
    criterion = train_criterion(mixup, cfg.smoothing)

    # SIGTERM/SIGINT/SIGUSR1 (preemption, Ctrl-C) end the run after an optimizer update, with a checkpoint
    stop = StopOnSignal(accelerator)

    def checkpoint() -> Path:
        with stop.saving():
            path = save_checkpoint(accelerator, checkpoints, progress, cfg.keep_checkpoints)
        logger.info(f"checkpoint {path}")
        return path

    metrics, evaluation = {}, None
    with stop:
        while progress.epoch < cfg.epochs:
            # the seedable sampler's order and the augmentations depend only on (seed, epoch): a resumed epoch
            # re-creates them and skips the batches already trained on
            train_loader.set_epoch(progress.epoch)
            train_loader.dataset.set_epoch(progress.epoch)
            loader = accelerator.skip_first_batches(train_loader, progress.batches_done) if progress.batches_done \
                else train_loader
            start, batches_before = time.perf_counter(), progress.batches_done
            images_per_second = train_one_epoch(accelerator, model, loader, optimizer, scheduler, criterion, mixup,
                                                cfg, progress, checkpoint, stop)
            progress.train_seconds += time.perf_counter() - start
            progress.train_images += (progress.batches_done - batches_before) * cfg.batch_size * \
                accelerator.num_processes
            if progress.batches_done < len(train_loader):  # stopped by a signal: the same as a periodic checkpoint
                raise stop.preempted(checkpoint(), progress.num_updates)
            evaluation = evaluate_logits(accelerator, model, eval_loader)
            metrics = score_logits([evaluation])
            logger.info(f"epoch {progress.epoch + 1}: top-1 {metrics['top1']:.4f} top-5 {metrics['top5']:.4f} "
                        f"loss {metrics['eval_loss']:.4f} ({images_per_second:.1f} img/s per process)")
            accelerator.log({f"eval/{k}": v for k, v in metrics.items()} | {"epoch": progress.epoch + 1},
                            step=progress.num_updates)
            progress.history.append(metrics | {"epoch": progress.epoch + 1})
            progress.epoch, progress.batches_done = progress.epoch + 1, 0
            path = checkpoint()
            if stop.requested(now=True):  # a signal at the epoch's last update or during its evaluation
                raise stop.preempted(path, progress.num_updates)
    if evaluation is None:  # resumed from the last epoch's checkpoint: the run had only the export left to do
        evaluation = evaluate_logits(accelerator, model, eval_loader)
        metrics = score_logits([evaluation])
    return metrics | {"epoch": cfg.epochs, "optimizer_updates": progress.num_updates, "history": progress.history,
                      "train_images_per_second": round(progress.train_images / max(progress.train_seconds, 1e-9),
                                                       2)}, evaluation
