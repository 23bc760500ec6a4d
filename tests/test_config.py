import dataclasses

import pytest
import yaml

from food101hf.config import PolishConfig, TrainConfig, parse_config, polish_size
from food101hf.errors import ConfigError, UsageError
from food101hf.outputs import read_recipes, recorded_dataset, save_config


def test_defaults_are_the_food101_recipe():
    cfg = parse_config(TrainConfig, [])
    assert cfg == dataclasses.replace(TrainConfig(), output_dir="outputs/food101")
    assert (cfg.dataset, cfg.model, cfg.image_size) == ("ethz/food101", "resnet18.a1_in1k", 192)
    assert cfg.freeze_modules() == ["conv1", "bn1", "layer1"]


def test_the_output_folder_is_named_after_the_data(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "photos" / "my_food").mkdir(parents=True)
    assert parse_config(TrainConfig, ["--dataset", "demo"]).output_dir == "outputs/demo"
    assert parse_config(TrainConfig, ["--dataset", "photos/my_food/"]).output_dir == "outputs/my_food"
    assert parse_config(TrainConfig, ["--dataset", "someone/thai_food"]).output_dir == "outputs/thai_food"
    assert parse_config(TrainConfig, ["--dataset", "demo", "--output-dir", "runs/x"]).output_dir == "runs/x"


def test_polish_raises_the_trained_size_by_fixres_ratio_to_a_multiple_of_16():
    assert [polish_size(size) for size in (32, 64, 128, 160, 192, 224, 256)] == [48, 80, 144, 192, 224, 256, 304]
    cfg = parse_config(PolishConfig, ["--init", "org/run"])
    assert (cfg.image_size, cfg.output_dir) == (None, None)  # both follow the init: `resolved`
    assert (cfg.resolved(192).image_size, cfg.resolved(192).output_dir) == (224, "outputs/run-224")
    chosen = parse_config(PolishConfig, ["--init", "org/run", "--image-size", "288", "--output-dir", "x"])
    assert (chosen.resolved(192).image_size, chosen.resolved(192).output_dir) == (288, "x")


def test_flags_override_yaml_which_overrides_defaults(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("image_size: 96\nlr: 0.01\nwarmup-epochs: 0.5\npretrained: false\n")
    cfg = parse_config(TrainConfig, ["--config", str(preset), "--lr", "2e-3", "--pretrained"])
    assert cfg.image_size == 96  # from the preset
    assert cfg.warmup_epochs == 0.5  # preset keys may use dashes
    assert cfg.lr == 2e-3 and cfg.pretrained is True  # flags win
    assert cfg.epochs == TrainConfig.epochs  # untouched default


def test_unknown_yaml_key_fails_listing_valid_keys(tmp_path):
    preset = tmp_path / "p.yaml"
    preset.write_text("image_sise: 96\n")
    with pytest.raises(ConfigError, match="unknown config key.s. image_sise. Valid keys: dataset, .*image_size"):
        parse_config(TrainConfig, ["--config", str(preset)])


def test_unknown_flag_fails_suggesting_the_closest():
    with pytest.raises(UsageError) as error:
        parse_config(TrainConfig, ["--batchsize", "8"], prog="train.py")
    assert str(error.value) == ("unrecognized arguments: --batchsize 8 (did you mean --batch-size?) "
                                "(`train.py --help` lists the flags)")
    with pytest.raises(UsageError) as error:  # the command line as typed, then each typo's nearest flags
        parse_config(TrainConfig, ["--batchsize", "8", "--epoch", "3", "--zzz"], prog="train.py")
    assert str(error.value) == ("unrecognized arguments: --batchsize 8 --epoch 3 --zzz (did you mean --batch-size "
                                "for --batchsize; --epochs for --epoch?) (`train.py --help` lists the flags)")


@pytest.mark.parametrize("argv, preset, freeze", [
    (["--no-pretrained"], "", "none"),  # frozen random layers would never learn
    (["--no-pretrained", "--freeze", "conv1"], "", "conv1"),  # asked for: kept
    (["--no-pretrained"], "freeze: conv1,bn1\n", "conv1,bn1"),  # from the preset: kept
    ([], "", "conv1,bn1,layer1"),  # pretrained: the recipe's default
])
def test_random_weights_train_every_layer_unless_freeze_is_given(argv, preset, freeze, tmp_path):
    (tmp_path / "preset.yaml").write_text(preset or "epochs: 30\n")
    cfg = parse_config(TrainConfig, [*argv, "--config", str(tmp_path / "preset.yaml")], prog="train.py")
    assert cfg.freeze == freeze


def test_abbreviated_flags_are_not_guessed():
    with pytest.raises(UsageError, match="unrecognized arguments: --image"):
        parse_config(TrainConfig, ["--image", "64"])


@pytest.mark.parametrize("argv, message", [
    (["--epochs", "two"], "--epochs must be int, got 'two'"),
    (["--epochs", "1.5"], "--epochs must be int, got '1.5'"),
    (["--lr", "none"], "--lr must be float, got 'none'"),
])
def test_bad_values_name_the_flag(argv, message):
    with pytest.raises(ConfigError) as error:
        parse_config(TrainConfig, argv)
    assert str(error.value) == message


@pytest.mark.parametrize("argv, message", [
    (["--batch-size", "9"], "--batch-size 9: Mixup/CutMix (--mixup 0.2, --cutmix 1.0) mixes each batch with its "
                            "mirror and needs an even batch per process; use 8 or 10, or --mixup 0 --cutmix 0"),
    (["--epochs", "0"], "--epochs 0: must be at least 1"),
    (["--epochs", "2", "--warmup-epochs", "2"], "--warmup-epochs 2.0 is not shorter than --epochs 2: the learning "
                                                "rate would never reach its cosine; use a warmup below 2 epochs"),
    (["--lr", "0"], "--lr 0.0: must be positive"),
    (["--min-lr", "0.1"], "--min-lr 0.1 is above --lr 0.001: the cosine would climb instead of decay"),
    (["--image-size", "16"], "--image-size 16: must be at least 32"),
    (["--val-fraction", "1"], "--val-fraction 1.0: must be between 0 and 1"),
    (["--mixed-precision", "fp8"], "--mixed-precision fp8: must be one of auto, no, fp16, bf16"),
    (["--push-to-hub", "my-model"], "--push-to-hub my-model: not a Hub repo id (org/name)"),
    (["--freeze", ","], "--freeze ',': name modules, comma-separated, or 'none'"),
])
def test_settings_that_cannot_work_are_refused_naming_the_flag(argv, message):
    with pytest.raises(ConfigError) as error:
        parse_config(TrainConfig, argv)
    assert str(error.value) == message


def test_odd_batch_is_fine_without_mixup_and_polish_allows_0_epochs():
    assert parse_config(TrainConfig, ["--batch-size", "9", "--mixup", "0", "--cutmix", "0"]).batch_size == 9
    assert parse_config(PolishConfig, ["--init", "org/model", "--epochs", "0"]).epochs == 0
    with pytest.raises(ConfigError, match="^--init is required: a folder written by train.py or polish.py"):
        parse_config(PolishConfig, [])


def test_a_preset_warmup_as_long_as_the_run_is_capped_and_logged(caplog):
    with caplog.at_level("WARNING"):
        cfg = parse_config(TrainConfig, ["--config", "configs/food101.yaml", "--epochs", "1"])
    assert cfg.warmup_epochs == 0.5
    assert caplog.messages == ["the warmup of 2 epochs (from the preset) is not shorter than the 1-epoch run: "
                               "warming up for 0.5 epochs (50% of the run) instead; pass --warmup-epochs to choose"]
    assert parse_config(TrainConfig, ["--config", "configs/food101.yaml", "--epochs", "3"]).warmup_epochs == 2


def test_polish_does_not_offer_what_it_takes_from_the_init():
    for argv in (["--model", "resnet50"], ["--pretrained"], ["--drop-rate", "0.1"]):
        with pytest.raises(ConfigError, match=f"^{argv[0]}: polish.py takes it from the model it starts from"):
            parse_config(PolishConfig, ["--init", "x", *argv], prog="polish.py")


def test_a_local_dataset_folder_is_recorded_as_an_absolute_path(image_folder, monkeypatch):
    monkeypatch.chdir(image_folder.parent)
    assert parse_config(TrainConfig, ["--dataset", "food"]).dataset == str(image_folder.resolve())
    assert parse_config(TrainConfig, ["--dataset", "ethz/food101"]).dataset == "ethz/food101"
    assert parse_config(TrainConfig, ["--dataset", "demo"]).dataset == "demo"


def test_a_recipe_records_its_local_dataset_relative_to_itself_and_reloads_from_anywhere(image_folder, tmp_path,
                                                                                         monkeypatch):
    monkeypatch.chdir(image_folder.parent)
    out = tmp_path / "outputs" / "run"
    out.mkdir(parents=True)
    save_config(parse_config(TrainConfig, ["--dataset", "food"]), out / "train_config.yaml")
    text = (out / "train_config.yaml").read_text()
    assert yaml.safe_load(text)["dataset"] == {"path": "../../food"} and str(tmp_path) not in text
    monkeypatch.chdir(out)  # `--config` reads it relative to the recipe's folder, not the working directory
    assert parse_config(TrainConfig, ["--config", str(out / "train_config.yaml")]).dataset == str(image_folder)
    moved = tmp_path.rename(tmp_path.with_name(f"{tmp_path.name}-moved"))  # data and outputs move together
    recipe = moved / "outputs" / "run" / "train_config.yaml"
    assert recorded_dataset(read_recipes(recipe.parent)[0]["dataset"], recipe) == str(moved / "food")  # polish.py
    (moved / "food").rename(moved / "elsewhere")
    with pytest.raises(ConfigError, match=r"train_config.yaml records the local dataset folder ../../food \(from its "
                                          r"folder\), which is not on this machine: pass --dataset"):
        recorded_dataset(read_recipes(recipe.parent)[0]["dataset"], recipe)


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
    cfg = parse_config(PolishConfig, ["--init", "org/run", "--epochs", "0", "--no-bn-reestimate"])
    assert (cfg.init, cfg.epochs, cfg.bn_reestimate, cfg.dataset) == ("org/run", 0, False, None)
    assert (cfg.resolved(192).image_size, cfg.lr, cfg.mixup, cfg.cutmix) == (224, 1e-4, 0.0, 0.0)
    assert cfg.freeze == TrainConfig.freeze and cfg.smoothing == TrainConfig.smoothing  # the rest: train.py's
    path = tmp_path / "train_config.yaml"
    save_config(cfg, path)
    assert parse_config(PolishConfig, ["--config", str(path)]) == cfg
