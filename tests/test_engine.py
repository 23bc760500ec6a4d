import evaluate
import pytest
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from conftest import run_script
from food101hf.config import TrainConfig
from food101hf.engine import (create_mixup, create_scheduler, evaluate_model, resolve_mixed_precision,
                              train_criterion, updates_per_epoch)
from food101hf.metrics import TOPK_ACCURACY


@pytest.fixture
def accelerator():
    AcceleratorState._reset_state(True)
    yield Accelerator(cpu=True)
    AcceleratorState._reset_state(True)


def test_mixup_targets_are_smoothed_distributions_over_all_classes():
    cfg = TrainConfig(mixup=0.2, cutmix=1.0, smoothing=0.1)
    mixup = create_mixup(cfg, num_classes=101)
    images, labels = torch.randn(8, 3, 16, 16), torch.arange(8)
    mixed, targets = mixup(images, labels)
    assert mixed.shape == images.shape and targets.shape == (8, 101)
    assert torch.allclose(targets.sum(-1), torch.ones(8))
    assert targets.min().item() == pytest.approx(0.1 / 101)  # smoothing is inside the targets
    # timm mixes each image with its mirror in the batch: all non-smoothing mass sits on those two labels
    pair_mass = targets.gather(1, labels[:, None]) + targets.gather(1, labels.flip(0)[:, None])
    assert torch.allclose(pair_mass.squeeze(1), torch.full((8,), 0.9 + 2 * 0.1 / 101))
    assert isinstance(train_criterion(mixup, 0.1), type(train_criterion(mixup, 0.0)))


def test_no_mixup_gives_hard_labels_and_a_smoothed_loss():
    cfg = TrainConfig(mixup=0.0, cutmix=0.0, smoothing=0.1)
    assert create_mixup(cfg, 10) is None
    logits, labels = torch.randn(4, 10), torch.arange(4)
    plain = torch.nn.functional.cross_entropy(logits, labels)
    assert train_criterion(None, 0.1)(logits, labels).item() != pytest.approx(plain.item())
    assert train_criterion(None, 0.0)(logits, labels).item() == pytest.approx(plain.item())


def _lrs(cfg, per_epoch, epochs):
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    scheduler = create_scheduler(optimizer, cfg, per_epoch, epochs)
    lrs = [optimizer.param_groups[0]["lr"]]
    for update in range(1, per_epoch * epochs + 1):
        scheduler.step_update(update)
        lrs.append(optimizer.param_groups[0]["lr"])
    return lrs


def test_schedule_warms_up_linearly_then_follows_a_cosine_to_min_lr():
    cfg = TrainConfig(lr=1.0, min_lr=0.0, warmup_epochs=1)
    lrs = _lrs(cfg, per_epoch=10, epochs=5)  # 50 updates, 10 of warmup
    assert lrs[0] == pytest.approx(0.01)
    assert all(b > a for a, b in zip(lrs[:10], lrs[1:11]))
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[30] == pytest.approx(0.5)  # halfway through the cosine
    assert all(b <= a for a, b in zip(lrs[10:], lrs[11:]))
    assert lrs[50] == pytest.approx(0.0, abs=1e-9)


def test_updates_per_epoch_counts_the_partial_accumulation_window():
    assert updates_per_epoch(10, 1) == 10
    assert updates_per_epoch(10, 4) == 3
    assert updates_per_epoch(12, 4) == 3


def test_accelerate_updates_once_per_window_and_at_the_end_of_the_loader():
    AcceleratorState._reset_state(True)
    accelerator = Accelerator(cpu=True, gradient_accumulation_steps=4)
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = torch.utils.data.DataLoader(torch.randn(10, 2), batch_size=1)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    updates = 0
    for x in loader:
        with accelerator.accumulate(model):
            accelerator.backward(model(x).sum())
            optimizer.step()
            optimizer.zero_grad()
        updates += accelerator.sync_gradients
    assert updates == updates_per_epoch(len(loader), 4) == 3


def test_metric_module_matches_a_hand_count():
    metric = evaluate.load(TOPK_ACCURACY, keep_in_memory=True)
    predictions = [[3, 1, 2, 0, 4], [0, 1, 2, 3, 4], [4, 3, 2, 1, 0], [1, 0, 2, 3, 4]]
    references = [3, 2, 0, 9]  # top-1 hit, top-5 hit, top-5 hit (last place), miss
    metric.add_batch(predictions=predictions[:2], references=references[:2])
    metric.add_batch(predictions=predictions[2:], references=references[2:])
    assert metric.compute(k=[1, 5]) == {"top1": 0.25, "top5": 0.75}


def test_evaluate_model_counts_every_image_once(accelerator):
    class Fixed(torch.nn.Module):  # predicts class (index % 3) with certainty
        pretrained_cfg = {"mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}  # unused: the batches are float

        def forward(self, x):
            return torch.nn.functional.one_hot(x[:, 0, 0, 0].long() % 3, 3).float() * 10

    images = torch.arange(7).float().view(7, 1, 1, 1).expand(7, 3, 2, 2).contiguous()
    labels = torch.tensor([0, 1, 2, 0, 1, 0, 0])  # right iff labels[i] == i % 3: all but image 5
    data = [{"pixel_values": x, "label": y} for x, y in zip(images, labels)]
    loader = accelerator.prepare(torch.utils.data.DataLoader(data, batch_size=3))
    metrics = evaluate_model(accelerator, Fixed(), loader)
    assert metrics["num_eval_samples"] == 7
    assert metrics["top1"] == pytest.approx(6 / 7)
    assert metrics["top5"] == 1.0  # 3 classes: top-k is capped at the class count


def test_mixed_precision_auto_respects_the_launcher(monkeypatch):
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "fp16")
    assert resolve_mixed_precision("auto") == "fp16"
    assert resolve_mixed_precision("no") == "no"
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert resolve_mixed_precision("auto") in ("no", "bf16")


def test_scoring_keeps_evaluate_from_importing_transformers_which_still_imports_afterwards():
    """evaluate imports transformers.pipelines for its Evaluator classes (huggingface/evaluate#387): seconds of
    CPU at every run's first evaluation, for nothing a metric loaded by path uses. Run in a process of its own: in
    this one, evaluate is already imported."""
    pytest.importorskip("transformers")
    code = ("import sys, torch; from food101hf.engine import score_logits; "
            "print(score_logits([(torch.eye(4)[[0, 1, 3]], torch.arange(3))])['top1'], 'evaluate' in sys.modules, "
            "'transformers' in sys.modules); import transformers.pipelines; print(transformers.pipelines.pipeline)")
    result = run_script("-c", code)
    assert result.returncode == 0, result.stderr
    scored, imported_later = result.stdout.splitlines()
    assert scored == f"{2 / 3} True False" and "function pipeline" in imported_later
