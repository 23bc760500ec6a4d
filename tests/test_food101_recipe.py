"""The README's real command, `train.py --config configs/food101.yaml`, run small against a stand-in Hub that
serves Food-101 in the Hub's layout (parquet shards under data/, the dataset card's YAML with the `image`/`label`
features and the 101 class names in order) and timm's `resnet18.a1_in1k` weights (generated, not the real ones).
Then polish.py and predict on the result. Marked slow: ~1-2 min on 2 cores."""

import json

import pytest
import timm
import torch
import yaml
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from safetensors.torch import load_file, save

from conftest import FOOD101, jpeg, parquet, run_script
from hub_server import HubServer

pytestmark = pytest.mark.slow


def parquet_shard(labels: list[int], seed: int) -> bytes:
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=FOOD101)})
    colours = [((37 * i) % 256, (91 * i) % 256, (53 * i) % 256) for i in range(len(FOOD101))]
    rows = {"image": [{"bytes": jpeg(colours[label], seed + i), "path": None} for i, label in enumerate(labels)],
            "label": labels}
    return parquet(Dataset.from_dict(rows, features=features))


def food101_repo(train_per_class: int = 2, validation_per_class: int = 1) -> dict[str, bytes]:
    """ethz/food101 as the Hub holds it since its parquet conversion: a card whose YAML declares the features,
    the splits and the data files, and the shards under data/ (sorted by class, like the real ones)."""
    names = {str(i): name for i, name in enumerate(FOOD101)}
    card = {"pretty_name": "Food-101",
            "dataset_info": {"features": [{"name": "image", "dtype": "image"},
                                          {"name": "label", "dtype": {"class_label": {"names": names}}}],
                             "splits": [{"name": "train", "num_examples": 101 * train_per_class},
                                        {"name": "validation", "num_examples": 101 * validation_per_class}]},
            "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"},
                                                                 {"split": "validation",
                                                                  "path": "data/validation-*"}]}]}
    train = [label for label in range(101) for _ in range(train_per_class)]
    half = len(train) // 2
    return {"README.md": f"---\n{yaml.safe_dump(card, sort_keys=False)}---\n\n# Food-101\n".encode(),
            "data/train-00000-of-00002.parquet": parquet_shard(train[:half], 0),
            "data/train-00001-of-00002.parquet": parquet_shard(train[half:], 1000),
            "data/validation-00000-of-00001.parquet": parquet_shard(
                [label for label in range(101) for _ in range(validation_per_class)], 2000)}


def timm_weights_repo() -> tuple[dict[str, bytes], dict[str, torch.Tensor]]:
    """timm/resnet18.a1_in1k's files (config.json and model.safetensors), with generated ImageNet-shaped weights."""
    torch.manual_seed(1)
    model = timm.create_model("resnet18", num_classes=1000)
    with torch.no_grad():  # BatchNorm statistics unlike the defaults, so that "kept frozen" can be seen
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    config = {"architecture": "resnet18", "num_classes": 1000, "num_features": 512,
              "pretrained_cfg": dict(model.pretrained_cfg)}
    return {"config.json": json.dumps(config, default=str).encode(), "model.safetensors": save(state)}, state


def test_the_readme_food101_command_runs_small_through_the_hubs_real_layout(tmp_path):
    served, weights = timm_weights_repo()
    with HubServer(token="hf_x") as hub:
        hub.add_repo("ethz/food101", food101_repo(), repo_type="dataset")
        hub.add_repo("timm/resnet18.a1_in1k", served)
        # a cache of its own: the served Food-101 and weights must not satisfy later tests' offline runs
        env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(tmp_path / "hf")}
        out = tmp_path / "food101"
        trained = run_script("train.py", "--config", "configs/food101.yaml", "--epochs", "1", "--image-size", "32",
                             "--batch-size", "16", "--num-workers", "0", "--mixed-precision", "no",
                             "--output-dir", str(out), env=env, timeout=600)
        assert trained.returncode == 0, trained.stderr
        # the preset's 2 warmup epochs in a 1-epoch run: capped, and said
        assert "the warmup of 2 epochs (from the preset) is not shorter than the 1-epoch run" in trained.stderr
        assert "ethz/food101: 202 train / 101 eval images (validation)\n" in trained.stderr
        assert "101 classes, 2 train and 1 eval images each\n" in trained.stderr
        requested = {path for _, path, _ in hub.requests}
        assert "/timm/resnet18.a1_in1k/resolve/main/model.safetensors" in requested
        assert "/datasets/ethz/food101/resolve/main/README.md" in requested

        config = json.loads((out / "config.json").read_text())
        assert config["label_names"] == FOOD101 and config["num_classes"] == 101
        exported = load_file(out / "model.safetensors")
        frozen = [k for k in weights if k.startswith(("conv1.", "bn1.", "layer1."))]
        assert frozen and all(torch.equal(exported[k], weights[k]) for k in frozen)  # really the served weights
        assert not torch.equal(exported["layer4.1.conv2.weight"], weights["layer4.1.conv2.weight"])  # trained
        assert "datasets:\n- ethz/food101" in (out / "README.md").read_text()

        polished = tmp_path / "polished"
        result = run_script("polish.py", "--init", str(out), "--epochs", "0", "--image-size", "48", "--batch-size",
                            "16", "--num-workers", "0", "--bn-batches", "2", "--output-dir", str(polished),
                            env=env, timeout=600)
        assert result.returncode == 0, result.stderr
        assert json.loads((polished / "config.json").read_text())["label_names"] == FOOD101

    photo = tmp_path / "dish.jpg"
    photo.write_bytes(jpeg((37 * 81 % 256, 91 * 81 % 256, 53 * 81 % 256), 7))
    predicted = run_script("-m", "food101hf.predict", "--model", str(polished), "--top-k", "3", str(photo))
    assert predicted.returncode == 0, predicted.stderr
    line = json.loads(predicted.stdout)
    assert line["file"] == str(photo) and len(line["predictions"]) == 3
    assert all(p["label"] in FOOD101 for p in line["predictions"])
