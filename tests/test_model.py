import pytest
import torch

from food101hf.config import TrainConfig
from food101hf.model import count_parameters, create_model, create_optimizer, freeze, reestimate_batchnorm

CFG = TrainConfig(pretrained=False)


@pytest.fixture
def frozen_model():
    torch.manual_seed(0)
    model = create_model(CFG, num_classes=7)
    freeze(model, CFG.freeze_modules())
    return model


def test_new_head_has_the_dataset_classes(frozen_model):
    assert frozen_model.fc.out_features == 7


def test_freezing_stops_gradients_for_stem_and_layer1_only(frozen_model):
    for name, param in frozen_model.named_parameters():
        frozen = name.startswith(("conv1.", "bn1.", "layer1."))
        assert param.requires_grad is not frozen, name
    trainable, total = count_parameters(frozen_model)
    assert 0 < trainable < total


def test_frozen_batchnorm_statistics_do_not_move_in_a_train_step(frozen_model):
    before = {k: v.clone() for k, v in frozen_model.state_dict().items() if "running_mean" in k}
    frozen_model.train()
    optimizer = create_optimizer(frozen_model, CFG)
    loss = frozen_model(torch.randn(4, 3, 32, 32) * 3 + 1).logsumexp(-1).mean()
    loss.backward()
    optimizer.step()
    after = frozen_model.state_dict()
    for key, value in before.items():
        if key.startswith(("bn1.", "layer1.")):
            assert torch.equal(after[key], value), key
        else:
            assert not torch.equal(after[key], value), key  # trainable stages still adapt their statistics
    assert frozen_model.layer1[0].conv1.weight.grad is None


def test_optimizer_holds_no_frozen_parameter_and_no_decay_on_norms_and_biases(frozen_model):
    optimizer = create_optimizer(frozen_model, CFG)
    in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
    trainable = {id(p) for p in frozen_model.parameters() if p.requires_grad}
    assert in_optimizer == trainable
    names = {id(p): n for n, p in frozen_model.named_parameters()}
    for group in optimizer.param_groups:
        for p in group["params"]:
            is_norm_or_bias = p.ndim <= 1
            assert group["weight_decay"] == (0.0 if is_norm_or_bias else CFG.weight_decay), names[id(p)]


def test_unknown_module_names_are_refused_with_the_real_ones():
    model = create_model(CFG, num_classes=3)
    with pytest.raises(ValueError, match="layer9.*Top-level modules: conv1, bn1"):
        freeze(model, ["layer9"])


def test_unreachable_pretrained_weights_say_what_to_do(monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    from food101hf.errors import HubError

    with pytest.raises(HubError, match="--no-pretrained"):
        create_model(TrainConfig(), num_classes=3)


def test_batchnorm_reestimate_averages_every_batch_and_skips_frozen_layers():
    torch.manual_seed(0)
    model = create_model(CFG, num_classes=3)
    freeze(model, ["conv1", "bn1"])  # the stem's BatchNorm is now a FrozenBatchNorm2d
    frozen_before = model.bn1.running_mean.clone()
    batches = [{"pixel_values": torch.randn(4, 3, 32, 32) * 2 + 1} for _ in range(3)]
    model.eval()
    used = reestimate_batchnorm(model, batches, num_batches=2, device="cpu")
    assert used == 8 and not model.training  # the last batch was not used; the mode is restored
    assert torch.equal(model.bn1.running_mean, frozen_before)
    # layer1's first BatchNorm sees the stem's output, so recompute it from the two batches by hand
    with torch.no_grad():
        stem = torch.cat([model.maxpool(model.act1(model.bn1(model.conv1(b["pixel_values"])))) for b in batches[:2]])
        conv = model.layer1[0].conv1(stem)
    assert torch.allclose(model.layer1[0].bn1.running_mean, conv.mean((0, 2, 3)), atol=1e-5)
