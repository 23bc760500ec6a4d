"""The timm model, its new head, freezing, and the optimizer's parameter groups."""

from __future__ import annotations

import itertools
from pathlib import Path

import timm
import torch
from timm.optim import create_optimizer_v2, list_optimizers
from timm.utils.model import freeze as timm_freeze

from .config import TrainConfig
from .errors import ConfigError, DivergedError
from .hub_access import hub_errors
from .outputs import trained_folder
from .transforms import model_input


def check_model(cfg: TrainConfig) -> None:
    """Refuse, before any data or weights are loaded, a --model timm does not know (or, with --pretrained, whose
    tag has no weights), an --opt it has no optimizer for, and a --freeze naming modules the model lacks. The
    model is built on the meta device: no memory, ~30 ms. Raises ConfigError naming the flag."""
    arch = cfg.model.partition(".")[0]
    if ":" not in cfg.model:  # hf-hub:/local-dir: names are resolved by timm when the weights load
        if not timm.is_model(arch):
            similar = ", ".join(timm.list_models(f"{arch[:6]}*")[:8]) or "see timm.list_models()"
            raise ConfigError(f"--model {cfg.model}: not a timm model (similar: {similar})")
        if cfg.pretrained and not timm.models.is_model_pretrained(cfg.model):
            tags = ", ".join(timm.list_pretrained(f"{arch}.*")[:8]) or "none"
            raise ConfigError(f"--model {cfg.model}: timm has no pretrained weights of that name (tags of {arch}: "
                              f"{tags}); or pass --no-pretrained to train every layer from random weights")
        with torch.device("meta"):
            model = timm.create_model(arch, num_classes=2)
        try:
            freeze_check(model, cfg.freeze_modules())
        except ValueError as e:
            raise ConfigError(f"--freeze {cfg.freeze}: {e}") from None
    if cfg.opt.lower() not in list_optimizers():
        raise ConfigError(f"--opt {cfg.opt}: not a timm optimizer (e.g. adamw, sgd, lamb; "
                          f"timm.optim.list_optimizers() lists them)")


def create_model(cfg: TrainConfig, num_classes: int, init: str | None = None) -> torch.nn.Module:
    """`cfg.model` with a fresh `num_classes` head: ImageNet weights if cfg.pretrained, or the weights of `init`
    (a timm model id such as ``local-dir:DIR`` or ``hf-hub:org/name``) when given."""
    name, pretrained = (init, True) if init else (cfg.model, cfg.pretrained)
    if not pretrained:
        return timm.create_model(name, num_classes=num_classes, drop_rate=cfg.drop_rate)
    hint = ("pass --no-pretrained to train every layer from random weights, or a folder written by train.py"
            if init is None else "pass a local folder written by train.py")
    with hub_errors(f"the weights of {name}", hint=hint):
        return timm.create_model(name, pretrained=True, num_classes=num_classes, drop_rate=cfg.drop_rate)


def load_trained(ref: str | Path) -> torch.nn.Module:
    """A model written by train.py or polish.py (see `outputs.trained_folder`), with its labels in
    ``pretrained_cfg["label_names"]`` and its served input size and crop in ``pretrained_cfg``. Raises
    DivergedError if a weight holds a NaN or an infinity (a diverged run's export, from before food101hf refused
    to write one): its every prediction would be NaN."""
    model = timm.create_model(f"local-dir:{trained_folder(ref)}", pretrained=True)
    if bad := nonfinite_tensors(model):
        raise DivergedError(f"{ref}: {len(bad)} of {len(model.state_dict())} weight tensors (e.g. {bad[0]}) hold "
                            f"NaN or infinite values; the run that wrote it diverged: retrain it (a lower --lr, "
                            f"gradient clipping on)")
    return model


def nonfinite_tensors(model: torch.nn.Module) -> list[str]:
    """The names of the floating-point tensors of `model`'s state dict (weights and BatchNorm statistics) that
    hold a NaN or an infinity; ~10 ms for ResNet-18 on a CPU."""
    return [name for name, tensor in model.state_dict().items()
            if tensor.is_floating_point() and not torch.isfinite(tensor).all()]


def freeze(model: torch.nn.Module, module_names: list[str]) -> None:
    """Freeze the named modules: no gradients, and their BatchNorms become FrozenBatchNorm2d (running statistics
    fixed, in train mode too). For ResNet-18 the default stem + layer1 is 32% of forward FLOPs, and autograd then
    skips their backward entirely because nothing before them needs a gradient."""
    freeze_check(model, module_names)
    if module_names:
        timm_freeze(model, module_names)


def freeze_check(model: torch.nn.Module, module_names: list[str]) -> None:
    """Raise ValueError if a name is not a module of `model`, listing its top-level modules."""
    modules = dict(model.named_modules())
    unknown = [name for name in module_names if name not in modules]
    if unknown:
        children = ", ".join(name for name, _ in model.named_children())
        raise ValueError(f"cannot freeze {', '.join(unknown)}: not a module of {type(model).__name__}. "
                         f"Top-level modules: {children}")


def reestimate_batchnorm(model: torch.nn.Module, loader, num_batches: int, device: torch.device | str) -> int:
    """Recompute every BatchNorm's running mean and variance from `num_batches` batches of `loader` (FixRes: a
    resolution change shifts the activation statistics the model was trained with). torch's `update_bn` resets
    the statistics and averages them over the batches with equal weight. FrozenBatchNorm2d layers are left alone,
    so call this before `freeze`. Returns the number of images used."""
    images = 0

    def inputs():
        nonlocal images
        for batch in itertools.islice(loader, num_batches):
            images += len(batch["pixel_values"])
            yield model_input(batch["pixel_values"], model.pretrained_cfg["mean"], model.pretrained_cfg["std"])

    torch.optim.swa_utils.update_bn(inputs(), model, device=torch.device(device))
    return images


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    params = list(model.parameters())
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def create_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """timm's optimizer over trainable parameters only, without weight decay on norm and bias parameters."""
    return create_optimizer_v2(model, opt=cfg.opt, lr=cfg.lr, weight_decay=cfg.weight_decay,
                               filter_bias_and_bn=True)
