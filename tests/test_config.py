import pytest
import yaml

from food101hf.config import PolishConfig, TrainConfig, parse_config, save_config


def test_defaults_are_the_food101_recipe():
    cfg = parse_config(TrainConfig, [])
    assert cfg == TrainConfig()
    assert (cfg.dataset, cfg.model, cfg.image_size) == ("ethz/food101", "resnet18.a1_in1k", 192)
    assert cfg.freeze_modules() == ["conv1", "bn1", "layer1"]


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("image_size: 96\nlr: 0.01\nwarmup-epochs: 0.5\npretrained: false\n")
    cfg = parse_config(TrainConfig, ["--config", str(preset), "--lr", "2e-3", "--pretrained"])
    assert cfg.image_size == 96  # from the preset
    assert cfg.warmup_epochs == 0.5  # preset keys may use dashes
    assert cfg.lr == 2e-3 and cfg.pretrained is True  # flags win
    assert cfg.epochs == TrainConfig.epochs  # untouched default


def test_unknown_yaml_key_fails_listing_valid_keys(tmp_path, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_text("image_sise: 96\n")
    with pytest.raises(SystemExit) as exit_:
        parse_config(TrainConfig, ["--config", str(preset)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "image_sise" in err and "Valid keys:" in err and "image_size" in err


def test_unknown_flag_fails_listing_valid_flags(capsys):
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["--learning-rate", "1"])
    err = capsys.readouterr().err
    assert "--learning-rate" in err and "--lr" in err and "--image-size" in err


def test_abbreviated_flags_are_not_guessed(capsys):
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, ["--image", "64"])


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "two"], "epochs must be int"),
    (["--epochs", "1.5"], "epochs must be int"),
    (["--lr", "none"], "lr must be float"),
])
def test_bad_values_name_the_field(argv, message, capsys):
    with pytest.raises(SystemExit):
        parse_config(TrainConfig, argv)
    assert message in capsys.readouterr().err


def test_none_for_optional_fields_and_freeze_none():
    cfg = parse_config(TrainConfig, ["--clip-grad", "none", "--freeze", "none"])
    assert cfg.clip_grad is None
    assert cfg.freeze_modules() == []


def test_saved_config_reloads_and_records_versions_without_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fakeSecretToken123")
    cfg = parse_config(TrainConfig, ["--epochs", "3", "--dataset", "demo"])
    path = tmp_path / "train_config.yaml"
    save_config(cfg, path)
    text = path.read_text()
    assert "# torch " in text and "# timm " in text and "git" in text
    assert "hf_fakeSecretToken123" not in text
    assert yaml.safe_load(text)["epochs"] == 3
    assert parse_config(TrainConfig, ["--config", str(path)]) == cfg


def test_polish_config_shares_the_mechanism_with_polish_defaults(tmp_path):
    cfg = parse_config(PolishConfig, ["--init", "outputs/run", "--epochs", "0", "--no-bn-reestimate"])
    assert (cfg.init, cfg.epochs, cfg.bn_reestimate, cfg.dataset) == ("outputs/run", 0, False, None)
    assert (cfg.image_size, cfg.lr, cfg.mixup, cfg.cutmix) == (224, 1e-4, 0.0, 0.0)
    assert cfg.freeze == TrainConfig.freeze and cfg.smoothing == TrainConfig.smoothing  # the rest: train.py's
    path = tmp_path / "train_config.yaml"
    save_config(cfg, path)
    assert parse_config(PolishConfig, ["--config", str(path)]) == cfg
