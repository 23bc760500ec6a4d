"""The model card says what happened: start, data, run, results; its metadata passes huggingface_hub's checks offline;
its snippets classify an image."""

import contextlib
import io
import json
import re

import pytest
import yaml
from huggingface_hub import ModelCard, metadata_eval_result
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image

from conftest import CLASSES, export_model_folder
from food101hf.card import build_card, dataset_kind, dataset_name, model_license
from food101hf.config import TrainConfig
from food101hf.outputs import save_config

RUN = {"epoch": 15, "optimizer_updates": 375, "train_seconds": 83.4, "train_images_per_second": 92.1,
       "mixed_precision": "bf16", "hardware": "1 x CPU process (AMD EPYC 9454P, 2 threads each)"}


def card_of(folder, **kwargs) -> ModelCard:
    build_card(folder, **kwargs).save(folder / "README.md")
    return ModelCard.load(folder / "README.md")  # parsed back, as the Hub and users read it


def with_recipe(folder, **recipe):
    save_config(TrainConfig(**recipe), folder / "train_config.yaml")
    return folder


def test_a_demo_model_trained_from_scratch_says_so(tmp_path):
    folder = export_model_folder(tmp_path / "demo", sorted(CLASSES), dataset="demo")
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps(metrics | RUN))
    card = card_of(folder)
    metadata = card.data.to_dict()
    assert "base_model" not in metadata and "datasets" not in metadata
    assert metadata["license"] == "apache-2.0" and metadata["library_name"] == "timm"
    assert "trained from scratch (random initialisation, no pretrained weights)" in card.text
    assert "synthetic drawings" in card.text and "will not recognise real food photos" in card.text
    assert "fine-tuned" not in card.text and "github.com" not in card.text  # no placeholder project URL
    assert ("15 epochs, 375 optimizer updates, 1.4 min of training, 92.1 img/s, bf16 mixed precision, on 1 x CPU "
            "process (AMD EPYC 9454P, 2 threads each)") in card.text
    assert "| validation | 9 | 32 px, center crop | 50.00% (22.7-77.3%) | 1.0000 |" in card.text  # no top-5 column
    assert "No top-5: with 3 classes it is 100% whatever the model learned." in card.text
    config = json.loads((folder / "config.json").read_text())
    assert config["pretrained_cfg"]["license"] == "apache-2.0"
    assert not {"tag", "paper_ids", "origin_url"} & set(config["pretrained_cfg"])


@pytest.mark.parametrize("tag, license", [("resnet18.a1_in1k", "apache-2.0"),
                                          ("resnet18.fb_swsl_ig1b_ft_in1k", "cc-by-nc-4.0")])
def test_a_fine_tune_names_its_checkpoint_as_base_model_with_its_licence(tmp_path, tag, license):
    folder = with_recipe(export_model_folder(tmp_path / "run", sorted(CLASSES)), dataset="ethz/food101",
                         model=tag, pretrained=True)
    card = card_of(folder, repo_id="food/ft")
    assert card.data.base_model == f"timm/{tag}" and card.data.license == license
    assert card.data.datasets == ["ethz/food101"]
    assert f"fine-tuned from timm's ImageNet checkpoint [`{tag}`](https://huggingface.co/timm/{tag})" in card.text
    assert model_license(yaml.safe_load((folder / "train_config.yaml").read_text())) == license


def test_a_hub_dataset_is_declared_with_the_config_and_split_it_was_read_with(tmp_path):
    folder = with_recipe(export_model_folder(tmp_path / "run", sorted(CLASSES)), dataset="acme/dishes",
                         dataset_config="photos", image_column="img", label_column="labels")
    metrics = json.loads((folder / "metrics.json").read_text())
    (folder / "metrics.json").write_text(json.dumps(metrics | {"eval_split": "valid"}))
    card = card_of(folder, repo_id="food/dishes")
    assert card.data.datasets == ["acme/dishes"]
    result = card.data.eval_results[0]
    assert (result.dataset_type, result.dataset_config, result.dataset_split) == ("acme/dishes", "photos", "valid")
    assert "[acme/dishes](https://huggingface.co/datasets/acme/dishes) (config `photos`)" in card.text
    # a dataset's only config, `default`, goes without saying in the text
    folder = with_recipe(folder, dataset="acme/dishes", dataset_config="default")
    assert "(config `" not in card_of(folder).text and card_of(folder).data.eval_results[0].dataset_config == \
        "default"


def test_a_local_dataset_is_named_but_never_declared_as_a_hub_dataset(tmp_path):
    food = tmp_path / "my photos" / "food"
    food.mkdir(parents=True)
    for recorded in (str(food), "./gone/food", {"path": str(food)}):  # however a run records a local folder
        assert dataset_kind(recorded) == "local" and dataset_name(recorded) == "food"
    folder = export_model_folder(tmp_path / "run", sorted(CLASSES), dataset=str(food))
    card = card_of(folder)
    assert "datasets" not in card.data.to_dict()
    assert "a local image folder, `food` (not published)" in card.text and str(food) not in card.text
    result = card.data.eval_results[0]
    assert (result.dataset_type, result.dataset_name) == ("imagefolder", "food")


def test_metadata_passes_huggingface_hub_checks_offline(tmp_path):
    folder = export_model_folder(tmp_path / "run", sorted(CLASSES))
    metadata = card_of(folder, repo_id="food/checked").data.to_dict()
    name, results = model_index_to_eval_results(metadata["model-index"])  # raises on a malformed model-index
    assert name == "food/checked" and [r.metric_name for r in results] == ["Top-1 accuracy"]  # 3 classes
    expected = metadata_eval_result(
        model_pretty_name="food/checked", task_pretty_name="Image Classification", task_id="image-classification",
        metrics_pretty_name="Top-1 accuracy", metrics_id="accuracy", metrics_value=0.5,
        dataset_pretty_name="ethz/food101", dataset_id="ethz/food101", metrics_config="32px",
        dataset_split="validation")["model-index"][0]["results"][0]
    ours = metadata["model-index"][0]["results"][0]
    assert ours["task"] == expected["task"]
    assert ours["dataset"] == expected["dataset"] | {"args": {"image_size": 32}}  # + the resolution
    assert ours["metrics"][0] == expected["metrics"][0]


def test_results_carry_their_interval_and_a_small_eval_set_says_so(tmp_path):
    folder = export_model_folder(tmp_path / "run", [f"dish {i}" for i in range(101)])
    metrics = {"top1": 0.8, "top1_ci95": [0.7950, 0.8049], "top5": 0.95, "eval_loss": 0.7, "num_eval_samples": 25250,
               "eval_split": "validation", "image_size": 32}
    (folder / "metrics.json").write_text(json.dumps(metrics))
    card = card_of(folder)
    assert "| validation | 25250 | 32 px, center crop | 80.00% (79.5-80.5%) | 95.00% | 0.7000 |" in card.text
    assert "**Warning:**" not in card.text
    assert [r.metric_name for r in card.data.eval_results] == ["Top-1 accuracy", "Top-5 accuracy"]
    warning = "only 4 eval images (1-2 per class): top-1 lies anywhere in 0.150-0.850 (95% interval)"
    (folder / "metrics.json").write_text(json.dumps(metrics | {"eval_warning": warning}))
    assert f"**Warning:** {warning}." in card_of(folder).text


def test_a_polished_card_tells_the_chain(tmp_path):
    run = export_model_folder(tmp_path / "run", sorted(CLASSES), dataset="demo")
    polished = export_model_folder(tmp_path / "polished", sorted(CLASSES), image_size=48, dataset="demo")
    (polished / "base_config.yaml").write_text((run / "train_config.yaml").read_text())
    recipe = yaml.safe_load((polished / "train_config.yaml").read_text())
    recipe |= {"init": str(run), "bn_reestimate": True, "bn_batches": 50}
    (polished / "train_config.yaml").write_text(yaml.safe_dump(recipe))
    card = card_of(polished)
    assert "polished at 48 px from `run`, which was trained from scratch" in card.text
    assert "base_model" not in card.data.to_dict()


def snippets(card: ModelCard) -> list[str]:
    return re.findall(r"```python\n(.*?)```", card.text, re.S)


def run_snippet(code: str, image: str) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(code.replace('"dish.jpg"', repr(image)), {})
    return out.getvalue()


def test_every_snippet_classifies_an_image(tmp_path):
    folder = export_model_folder(tmp_path / "run", sorted(CLASSES))
    image = tmp_path / "dish.jpg"
    Image.new("RGB", (64, 48), (200, 40, 40)).save(image)
    found = snippets(card_of(folder))
    assert [("timm" in s, "food101hf" in s, "pipeline" in s) for s in found] == [
        (True, False, False), (False, True, False), (False, False, True)]
    for code in found:
        printed = run_snippet(code, str(image))
        assert any(label in printed for label in CLASSES), (code, printed)
