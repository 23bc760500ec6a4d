"""Push and pull through the real huggingface_hub client against tests/hub_server.py on 127.0.0.1 (the `hub`
fixture, in conftest.py)."""

import json
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
import yaml
from huggingface_hub import ModelCard, constants, upload_file
from PIL import Image

from conftest import CLASSES, HUB_TOKEN, TINY, TINY_POLISH, export_model_folder, point_client_at, run_script
from loaders import food101hf_scores, timm_scores, top1, transformers_auto_scores, transformers_pipeline_scores
from food101hf.config import TrainConfig
from food101hf.errors import DivergedError, HubError
from food101hf.hub import main
from food101hf.model import load_trained
from food101hf.outputs import copy_recipe, save_config
from food101hf.predict import Predictor
from food101hf.publish import push_folder, write_outputs

PUSHED = {".gitattributes", "README.md", "config.json", "metrics.json", "model.safetensors", "train_config.yaml"}
REPORT = {"metrics.json", "per_class.csv", "confused_pairs.csv", "confusion_matrix.png", "confident_mistakes.png",
          "report.md", "card.md"}  # train.py's and polish.py's error analysis, shown by the model card


@pytest.fixture
def model_dir(tmp_path):
    return export_model_folder(tmp_path / "run", sorted(CLASSES))


def anonymous_get(url: str) -> int:
    try:
        return urllib.request.urlopen(url).status
    except urllib.error.HTTPError as e:
        return e.code


def test_push_uploads_safetensors_config_card_and_recipe_only(hub, model_dir):
    (model_dir / "pytorch_model.bin").write_bytes(b"a pickle")  # never pushed
    url = push_folder(model_dir, "food/resnet18-demo")
    assert url.startswith(f"{hub.url}/food/resnet18-demo/commit/")
    files = hub.files("food/resnet18-demo")
    assert set(files) == PUSHED
    assert files["model.safetensors"] == (model_dir / "model.safetensors").read_bytes()
    assert all(HUB_TOKEN.encode() not in content for content in files.values())
    assert all(authorised for method, path, authorised in hub.requests
               if method == "POST" and path != "/api/validate-yaml")
    config = json.loads(files["config.json"])
    assert config["label_names"] == sorted(CLASSES) and config["pretrained_cfg"]["input_size"] == [3, 32, 32]


def photos_of_every_size(folder: Path) -> list[str]:
    """Smaller, larger, wider and taller than the served size, so resize and crop both matter."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (w, h) in enumerate([(50, 40), (120, 90), (37, 80), (300, 64)]):
        paths.append(str(folder / f"photo{i}.jpg"))
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(paths[-1], quality=95)
    return paths


def assert_same_scores(got: list[dict], want: list[dict], atol: float) -> None:
    for g, w in zip(got, want, strict=True):
        assert g.keys() == w.keys()
        assert max(abs(g[k] - w[k]) for k in w) <= atol, (g, w)


@pytest.mark.parametrize("image_size", [32, 48])
def test_timm_food101hf_and_transformers_load_the_export_locally_and_from_the_hub(hub, tmp_path, image_size):
    from transformers import AutoConfig, AutoImageProcessor

    folder = export_model_folder(tmp_path / "run", sorted(CLASSES), image_size=image_size)
    config = json.loads((folder / "config.json").read_text())
    assert "num_classes" not in config["model_args"] and config["num_classes"] == 3
    assert not {"tag", "paper_ids", "origin_url"} & set(config["pretrained_cfg"])  # not the ImageNet checkpoint
    push_folder(folder, "food/loaders")
    photos = photos_of_every_size(tmp_path / "photos")
    expected = food101hf_scores(folder, photos, precision="fp32")
    for ref in (str(folder), "food/loaders"):
        assert AutoConfig.from_pretrained(ref).id2label == dict(enumerate(sorted(CLASSES)))
        # the wrapper's image processor reads our pretrained_cfg: same size, crop, interpolation, mean and std
        processor_config = AutoImageProcessor.from_pretrained(ref).data_config
        served = Predictor(ref).data_config
        assert {k: tuple(processor_config[k]) if k in ("mean", "std") else processor_config[k] for k in served} \
            == {k: tuple(v) if k in ("mean", "std") else v for k, v in served.items()}
        assert processor_config["input_size"] == (3, image_size, image_size)
        assert_same_scores(food101hf_scores(ref, photos, precision="fp32"), expected, atol=0)
        assert_same_scores(timm_scores(f"local-dir:{ref}" if ref == str(folder) else f"hf-hub:{ref}", photos),
                           expected, atol=2e-3)
        assert_same_scores(transformers_auto_scores(ref, photos), expected, atol=2e-3)
        assert_same_scores(transformers_pipeline_scores(ref, photos), expected, atol=2e-3)


def test_card_is_regenerated_on_every_push_with_hub_metadata(hub, model_dir):
    push_folder(model_dir, "food/card")
    metrics = json.loads((model_dir / "metrics.json").read_text())
    (model_dir / "metrics.json").write_text(json.dumps(metrics | {"top1": 0.8125}))
    push_folder(model_dir, "food/card", commit_message="Better numbers")
    card = ModelCard(hub.files("food/card")["README.md"].decode())
    metadata = card.data.to_dict()
    assert metadata["library_name"] == "timm" and metadata["license"] == "apache-2.0"
    assert metadata["datasets"] == ["ethz/food101"] and "food101hf" in metadata["tags"]
    results = metadata["model-index"][0]["results"][0]
    assert results["dataset"]["type"] == "ethz/food101" and results["dataset"]["args"] == {"image_size": 32}
    assert [(m["name"], m["value"], m["config"]) for m in results["metrics"]] == [
        ("Top-1 accuracy", 0.8125, "32px")]  # 3 classes: no top-5
    assert "hf-hub:food/card" in card.text and "81.25%" in card.text and "epochs at 32 px" in card.text


def test_branch_private_repo_and_commit_message(hub, model_dir):
    assert main(["push", str(model_dir), "food/private", "--private", "--revision", "polish-224",
                 "--commit-message", "Polished at 224 px"]) == 0
    assert hub.repos["food/private"].private
    assert "model.safetensors" in hub.files("food/private", "polish-224")
    assert set(hub.files("food/private", "main")) == {".gitattributes"}
    assert anonymous_get(f"{hub.url}/food/private/resolve/polish-224/config.json") == 404
    assert "hf-hub:food/private@polish-224" in hub.files("food/private", "polish-224")["README.md"].decode()
    assert load_trained("food/private@polish-224").pretrained_cfg["label_names"] == sorted(CLASSES)


def test_push_removes_pickled_weights_an_earlier_upload_left(hub, model_dir):
    push_folder(model_dir, "food/old")
    upload_file(path_or_fileobj=b"pickle", path_in_repo="pytorch_model.bin", repo_id="food/old")
    push_folder(model_dir, "food/old")
    assert set(hub.files("food/old")) == PUSHED


def test_push_needs_a_token_with_write_access(hub, model_dir, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(model_dir / "no-token"))
    with pytest.raises(HubError, match="no Hub token: set HF_TOKEN or run `hf auth login`"):
        push_folder(model_dir, "food/x")
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    with pytest.raises(HubError, match="refused the push"):
        push_folder(model_dir, "food/x")
    assert "food/x" not in hub.repos and (model_dir / "model.safetensors").is_file()


def test_offline_push_fails_at_once_and_keeps_the_export(model_dir, monkeypatch):
    point_client_at(monkeypatch, "http://127.0.0.1:9")  # nothing listens on the discard port
    with pytest.raises(HubError, match="cannot reach the Hub at http://127.0.0.1:9") as error:
        push_folder(model_dir, "food/x")
    assert "Check your network connection" in str(error.value)
    assert "HF_HUB_OFFLINE=1" not in str(error.value)  # offline advice serves downloads; nothing offline can push
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError) as error:  # printed in one line, exit status 2, by food101hf.cli.run
        main(["push", str(model_dir), "food/x"])
    assert "HF_HUB_OFFLINE is set" in str(error.value)
    assert f"python -m food101hf.hub push {model_dir} food/x" in str(error.value)
    assert (model_dir / "model.safetensors").is_file()


def snapshot(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_failed_push_changes_nothing_on_disk(hub, tmp_path, monkeypatch):
    folder = export_model_folder(tmp_path / "run", sorted(CLASSES), dataset=str(tmp_path / "photos"))
    before = snapshot(folder)
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")  # the Hub refuses the push
    with pytest.raises(HubError, match="refused the push"):
        push_folder(folder, "food/refused")
    point_client_at(monkeypatch, "http://127.0.0.1:9")  # nothing listens there
    with pytest.raises(HubError, match="cannot reach the Hub"):
        push_folder(folder, "food/unreachable")
    assert snapshot(folder) == before  # README.md too: the card for the repo is written only once pushed


def test_a_successful_push_writes_the_repos_card_and_a_local_dataset_is_never_a_hub_dataset(hub, tmp_path):
    folder = export_model_folder(tmp_path / "run", sorted(CLASSES), dataset=str(tmp_path / "photos"))
    push_folder(folder, "food/local")
    card = (folder / "README.md").read_text()
    assert card == hub.files("food/local")["README.md"].decode() and "hf-hub:food/local" in card
    assert "datasets:" not in card and "type: imagefolder" in card


def test_pulled_model_predicts_like_the_local_one_and_then_works_offline(hub, model_dir, tmp_path, monkeypatch):
    push_folder(model_dir, "food/pull")
    image = tmp_path / "dish.png"
    from PIL import Image

    Image.new("RGB", (50, 40), (180, 120, 60)).save(image)
    local = Predictor(model_dir)(str(image))
    assert Predictor("food/pull")(str(image)) == local
    timm_model = timm.create_model("hf-hub:food/pull", pretrained=True)
    local_state = timm.create_model(f"local-dir:{model_dir}", pretrained=True).state_dict()
    assert all(torch.equal(local_state[k], v) for k, v in timm_model.state_dict().items())
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hub.requests.clear()
    assert Predictor("food/pull")(str(image)) == local
    assert hub.requests == []  # served from huggingface_hub's cache


# --- the real scripts: train -> push -> pull -> polish from the Hub -> push -> pull -------------------------------

def assert_every_loader_agrees(folder: Path, repo: str, photos: list[str]) -> None:
    """timm, food101hf and transformers (auto + pipeline), from the folder and from the Hub: same top-1 labels, and
    probabilities within 2e-3 of food101hf's fp32 ones (Pillow's resize vs torchvision's on uint8 tensors)."""
    expected = food101hf_scores(folder, photos, precision="fp32")
    for scores in (timm_scores(f"local-dir:{folder}", photos), timm_scores(f"hf-hub:{repo}", photos),
                   food101hf_scores(repo, photos, precision="fp32"),
                   transformers_auto_scores(str(folder), photos), transformers_auto_scores(repo, photos),
                   transformers_pipeline_scores(str(folder), photos), transformers_pipeline_scores(repo, photos)):
        assert_same_scores(scores, expected, atol=2e-3)
        clear = [i for i, e in enumerate(expected) if abs(sorted(e.values())[-1] - sorted(e.values())[-2]) > 4e-3]
        assert [top1(scores)[i] for i in clear] == [top1(expected)[i] for i in clear]  # and so the same top-1


@pytest.mark.slow
def test_train_push_pull_polish_round_trip(hub, image_folder, tmp_path, monkeypatch):
    env = {"HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1", "HF_TOKEN": HUB_TOKEN}
    out = tmp_path / "run"
    result = run_script("train.py", "--dataset", str(image_folder), *TINY, "--epochs", "1", "--num-workers", "0",
                        "--freeze", "none", "--output-dir", str(out), "--push-to-hub", "food/tiny",
                        "--hub-commit-message", "Tiny run", env=env)
    assert result.returncode == 0, result.stderr
    assert f"pushed to {hub.url}/food/tiny/commit/" in result.stderr
    assert set(hub.files("food/tiny")) == PUSHED | {f"report/{name}" for name in REPORT}

    photos = sorted(str(p) for p in (image_folder / "validation").rglob("*.jpg"))
    local = Predictor(out)(photos)
    assert Predictor("food/tiny")(photos) == local
    assert timm.create_model("hf-hub:food/tiny", pretrained=True).pretrained_cfg["label_names"] == sorted(CLASSES)
    assert_every_loader_agrees(out, "food/tiny", photos)

    # polish the pulled model at 48 px: its pushed recipe names its local dataset only relative to the training
    # machine's output folder, so polish.py asks for it
    polished = tmp_path / "polished"
    args = ["polish.py", "--init", "food/tiny", "--image-size", "48", "--epochs", "1", *TINY_POLISH,
            "--output-dir", str(polished), "--push-to-hub", "food/tiny-48"]
    result = run_script(*args, env=env)
    assert result.returncode == 2 and "records the local dataset folder ../food (from its folder), which is not on " \
        "this machine: pass --dataset" in result.stderr, result.stderr
    result = run_script(*args, "--dataset", str(image_folder), env=env)
    assert result.returncode == 0, result.stderr
    assert set(hub.files("food/tiny-48")) == PUSHED | {"base_config.yaml"} | {f"report/{name}" for name in REPORT}
    served = Predictor("food/tiny-48")
    assert served.data_config["input_size"] == (3, 48, 48)
    assert served(photos) == Predictor(polished)(photos)
    assert_every_loader_agrees(polished, "food/tiny-48", photos)
    card = hub.files("food/tiny-48")["README.md"].decode()
    assert "Polished from `food/tiny` at 48 px" in card and "base_model: food/tiny" in card
    assert yaml.safe_load(hub.files("food/tiny-48")["train_config.yaml"])["dataset"] == {"path": "../food"}
    assert yaml.safe_load(hub.files("food/tiny-48")["base_config.yaml"])["dataset"] == {"name": "food"}


# --- a push makes the repo equal to the folder, and publishes no path of the training machine -------------------

def test_a_push_makes_the_repo_equal_to_the_folder_and_keeps_what_others_added(hub, tmp_path):
    polished = export_model_folder(tmp_path / "polished", sorted(CLASSES), image_size=48)
    (polished / "report").mkdir()
    for name in REPORT:
        (polished / "report" / name).write_text(f"{name} of the 48 px model")
    (polished / "base_config.yaml").write_text((polished / "train_config.yaml").read_text())
    push_folder(polished, "food/same")
    upload_file(path_or_fileobj=b"# my notes", path_in_repo="notes/eval.md", repo_id="food/same")  # by hand
    commits = len(hub.repos["food/same"].commits)

    plain = export_model_folder(tmp_path / "plain", sorted(CLASSES))  # as train.py --no-report writes it
    push_folder(plain, "food/same")
    files = hub.files("food/same")
    assert set(files) == PUSHED | {"notes/eval.md"}  # stale report/* and base_config.yaml gone; the notes kept
    assert len(hub.repos["food/same"].commits) == commits + 1  # in the same commit as the new files
    removed = ", ".join(f"`{name}`" for name in sorted(["base_config.yaml"] + [f"report/{n}" for n in REPORT]))
    assert (f"This push deleted from the repo the files an earlier upload left that do not describe this model: "
            f"{removed}.") in files["README.md"].decode()
    push_folder(plain, "food/same")  # nothing stale any more: the card says nothing of it
    assert "This push deleted" not in hub.files("food/same")["README.md"].decode()


def test_nothing_pushed_names_a_path_of_the_training_machine(hub, tmp_path):
    photos = tmp_path / "data" / "photos"
    photos.mkdir(parents=True)
    run = export_model_folder(tmp_path / "outputs" / "run", sorted(CLASSES), dataset=str(photos))
    assert yaml.safe_load((run / "train_config.yaml").read_text())["dataset"] == {"path": "../../data/photos"}
    # a polished folder, as polish.py writes it: its init and the init's recipe, from another folder
    polished = export_model_folder(tmp_path / "outputs" / "run-48", sorted(CLASSES), 48, dataset=str(photos))
    recipe = yaml.safe_load((polished / "train_config.yaml").read_text()) | {"init": str(run)}
    (polished / "train_config.yaml").write_text(yaml.safe_dump(recipe))  # absolute: as food101hf wrote it before
    copy_recipe(run / "train_config.yaml", polished / "base_config.yaml")
    push_folder(polished, "food/private-paths")
    files = hub.files("food/private-paths")
    assert {"train_config.yaml", "base_config.yaml"} <= set(files)
    for name, content in files.items():
        assert tmp_path.name.encode() not in content and tmp_path.parent.name.encode() not in content, name
    for recipe in ("train_config.yaml", "base_config.yaml"):
        assert yaml.safe_load(files[recipe])["dataset"] == {"path": "../../data/photos"}
    assert yaml.safe_load(files["train_config.yaml"])["init"] == {"path": "../run"}
    elsewhere = Path("/usr/share")  # shares no folder with the output folder but the root: named, not located
    if elsewhere.is_dir() and not tmp_path.is_relative_to("/usr"):
        away = export_model_folder(tmp_path / "away", sorted(CLASSES), dataset=str(elsewhere))
        assert yaml.safe_load((away / "train_config.yaml").read_text())["dataset"] == {"name": "share"}


# --- a diverged model is never exported, and one exported before is refused --------------------------------------

@pytest.mark.parametrize("where, name", [("weight", "fc.weight"), ("BatchNorm statistic", "bn1.running_var")])
def test_the_export_refuses_non_finite_weights_and_writes_nothing(where, name, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    save_config(TrainConfig(dataset="demo", pretrained=False), out / "train_config.yaml")
    model = timm.create_model("resnet18", num_classes=3)
    tensor = model.get_parameter(name) if where == "weight" else model.get_buffer(name)
    with torch.no_grad():
        tensor.view(-1)[0] = float("nan") if where == "weight" else float("inf")
    metrics = {"top1": 0.5, "top5": 1.0, "eval_loss": 1.0, "num_eval_samples": 9}
    with pytest.raises(DivergedError, match=rf"refusing to export a model whose weights are not finite: 1 of \d+ "
                                            rf"tensors \(e.g. {name}\) hold NaN or infinite values"):
        write_outputs(out, model, sorted(CLASSES), timm.data.resolve_model_data_config(model), 32, metrics)
    assert sorted(p.name for p in out.iterdir()) == ["train_config.yaml"]  # nothing else, nothing partial
