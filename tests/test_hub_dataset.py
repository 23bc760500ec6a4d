"""How a Hub dataset is read (food101hf/hub_dataset.py): configs, split roles, image and label columns, label types
and withheld labels, the same for train.py, polish.py and the report. The rules are tested in-process on small
in-memory datasets; one slow test serves a dataset of each layout from tests/hub_server.py to the real `datasets`
client and trains, polishes and reports on each with the real commands."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest
import yaml
from datasets import ClassLabel, Dataset, DatasetDict, DatasetInfo, Features, Value
from datasets import Image as ImageFeature
from huggingface_hub import constants

from conftest import COLOURS, ROOT, jpeg, parquet
from food101hf import hub_dataset
from food101hf.config import PolishConfig, TrainConfig
from food101hf.data import eval_dataset, load_splits
from food101hf.errors import ConfigError, DatasetError
from food101hf.hub_dataset import check_labels, first_of_each_class, labels_withheld, resolve, split_roles, standardize
from food101hf.outputs import reuse_layout
from hub_server import HubServer

CLASS_LABEL = ClassLabel(names=["apple pie", "pizza"])


def split(values: list, label_feature=CLASS_LABEL, image: str = "image", label: str = "label", seed: int = 0,
          **other_columns) -> Dataset:
    """A split of a Hub-style dataset: JPEG bytes in an Image column (one colour per class), and the labels."""
    colour = {name: i for i, name in enumerate(sorted({str(v) for v in values}))}
    rows = {image: [{"bytes": jpeg(COLOURS[colour[str(v)] % len(COLOURS)], seed + i), "path": None}
                    for i, v in enumerate(values)], label: values}
    features = {image: ImageFeature(), label: label_feature}
    for name, (feature, values) in other_columns.items():
        rows[name], features[name] = values, feature
    return Dataset.from_dict(rows, features=Features(features))


def unchecked_split(labels: list, names: list[str]) -> Dataset:
    """A split whose ClassLabel column holds values datasets would refuse to encode (out of range, as a parquet file
    written by other tools can), built from an Arrow table directly."""
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=names)})
    images = pa.array([{"bytes": jpeg(COLOURS[0], i), "path": None} for i in range(len(labels))],
                      type=features.arrow_schema.field("image").type)
    table = pa.table({"image": images, "label": pa.array(labels, pa.int64())})
    return Dataset(table, info=DatasetInfo(features=features))


# ---- splits ----

def test_splits_are_named_as_split_folders_are_in_any_case():
    roles, unused = split_roles(["TEST", "Training", "valid", "unlabeled"], "acme/dishes")
    assert roles == {"train": "Training", "validation": "valid", "test": "TEST"} and unused == ["unlabeled"]
    assert list(roles) == ["train", "validation", "test"]
    with pytest.raises(DatasetError, match=r"acme/dishes: splits 'validation' and 'dev' are both the validation "
                                           r"split .*train/training, validation/val/valid/dev, test/testing"):
        split_roles(["train", "validation", "dev"], "acme/dishes")
    with pytest.raises(DatasetError, match=r"acme/dishes: no train split \(found test, extra\)"):
        split_roles(["test", "extra"], "acme/dishes")


# ---- columns ----

@pytest.mark.parametrize("columns, image, label, said", [
    ({"image": "img", "label": "label"}, "img", "label", "the only ClassLabel column"),  # cifar10
    ({"label": "labels"}, "image", "labels", "the only ClassLabel column"),  # beans
])
def test_the_one_image_and_the_one_classlabel_column_are_taken_and_the_log_says_so(columns, image, label, said,
                                                                                   caplog):
    found = DatasetDict(train=split(["pizza", "apple pie"], CLASS_LABEL, **columns,
                                    image_file_path=(Value("string"), ["a.jpg", "b.jpg"])))
    layout = resolve(found, "acme/dishes", "default")
    assert (layout.image_column, layout.label_column, layout.label_names) == (image, label, CLASS_LABEL.names)
    with caplog.at_level(logging.INFO):
        layout.log(logging.getLogger("test"))
    assert f"image column {image!r} (the only Image column), label column {label!r} ({said})" in caplog.text
    assert "--image-column/--label-column NAME choose others" in caplog.text


def test_among_several_classlabels_the_one_named_like_a_label_is_taken_naming_the_others():  # cifar100
    train = split([0, 1], CLASS_LABEL, image="img", label="fine_label",
                  coarse_label=(ClassLabel(names=["sweet", "savoury"]), [0, 1]))
    layout = resolve(DatasetDict(train=train), "acme/cifar100", None)
    assert layout.label_column == "fine_label"
    assert "label column 'fine_label' (the ClassLabel column named like a label; also a candidate: coarse_label)" \
        in layout.choices[0]
    layout = resolve(DatasetDict(train=train), "acme/cifar100", None, label_column="coarse_label")
    assert layout.label_column == "coarse_label" and layout.label_names == ["sweet", "savoury"]
    unnamed = split([0, 1], label="dish", kind=(ClassLabel(names=["sweet", "savoury"]), [0, 1]))
    with pytest.raises(DatasetError, match=r"^acme/dishes: 2 ClassLabel columns \(dish, kind\) .*pass --label-column "
                                           r"NAME$"):
        resolve(DatasetDict(train=unnamed), "acme/dishes", None)


@pytest.mark.parametrize("other, flags, error", [
    ({"photo": (ImageFeature(), [None, None])}, {}, r"2 Image columns \(columns: image \(Image\), label "
                                                    r"\(ClassLabel\), photo \(Image\)\); pass --image-column NAME"),
    ({}, {"image_column": "img"}, r"--image-column img: no such column \(columns: image \(Image\), label "
                                  r"\(ClassLabel\), weight \(float64\)\)"),
    ({}, {"label_column": "weight"}, r"--label-column weight: a float64 column, not class labels"),
    ({}, {"image_column": "label"}, r"--image-column label: a ClassLabel column, not images"),
])
def test_ambiguous_missing_or_wrong_columns_are_one_line_errors_naming_the_columns(other, flags, error):
    other = other or {"weight": (Value("float64"), [0.5, 0.7])}
    with pytest.raises(DatasetError, match=rf"^acme/dishes: {error}"):
        resolve(DatasetDict(train=split([0, 1], **other)), "acme/dishes", None, **flags)


def test_without_a_classlabel_the_string_or_integer_column_named_like_a_label_is_taken():
    strings = split(["pizza", "apple pie"], Value("string"), label="target", id=(Value("int64"), [7, 8]))
    assert resolve(DatasetDict(train=strings), "acme/dishes", None).label_column == "target"
    with pytest.raises(DatasetError, match=r"no ClassLabel column and none named "
                                           r"label/labels/target/fine_label/class .*pass --label-column NAME"):
        resolve(DatasetDict(train=split(["pizza", "apple pie"], Value("string"), label="dish")), "acme/dishes", None)
    both = split(["a", "b"], Value("string"), label="label", labels=(Value("string"), ["a", "b"]))
    with pytest.raises(DatasetError, match=r"2 columns named like a label \(label, labels\)"):
        resolve(DatasetDict(train=both), "acme/dishes", None)


# ---- label types ----

def test_string_labels_become_one_sorted_classlabel_in_every_split(caplog):
    found = DatasetDict(train=split(["pizza", "apple pie", "ramen"], Value("string"), label="target"),
                        valid=split(["ramen", "pizza"], Value("string"), label="target", seed=9))
    layout = resolve(found, "acme/dishes", "default")
    assert layout.label_names == ["apple pie", "pizza", "ramen"]
    standard = standardize(found, layout)
    assert list(standard) == ["train", "validation"]
    for name in standard:
        assert standard[name].column_names == ["image", "label"]
        assert standard[name].features["label"] == ClassLabel(names=["apple pie", "pizza", "ramen"])
    assert standard["train"]["label"] == [1, 0, 2] and standard["validation"]["label"] == [2, 1]
    assert "its string labels are 3 classes, sorted: apple pie, pizza, ramen" in layout.choices[1]


def test_integer_labels_are_class_indices_named_by_number():
    found = DatasetDict(train=split([2, 0, 1], Value("int64"), label="labels"),
                        test=split([-1, -1], Value("int64"), label="labels"))
    layout = resolve(found, "acme/digits", None)
    assert layout.label_names == ["0", "1", "2"]
    standard = standardize(found, layout)
    assert standard["train"]["label"] == [2, 0, 1] and labels_withheld(standard["test"])


# ---- withheld, missing and out-of-range labels ----

def test_withheld_labels_are_told_from_missing_and_out_of_range_ones():
    assert labels_withheld(split([-1, -1]))
    assert labels_withheld(split([None, None], Value("string")).cast_column("label", ClassLabel(names=["a"])))
    assert not labels_withheld(split([0, -1]))
    check_labels(split([0, 1]), "acme/dishes/train")  # nothing to say
    with pytest.raises(DatasetError, match=r"^acme/dishes/valid: 3 of 5 labels are missing or out of range for its "
                                           r"2 classes \(0..1\): null \(1 row\), -1, withheld \(1 row\), 7 \(1 row\)"):
        check_labels(unchecked_split([0, 1, -1, 7, None], ["a", "b"]), "acme/dishes/valid")


@pytest.fixture
def hub_datasets(monkeypatch):
    """Datasets 'on the Hub' for load_splits/eval_dataset, in memory: datasets.load_dataset answers from this dict."""
    served: dict[str, DatasetDict] = {}
    monkeypatch.setattr(hub_dataset, "load_dataset", lambda name, config=None: served[name])
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)  # no reachability check: nothing is fetched
    return served


def test_a_test_split_whose_labels_are_all_withheld_is_never_evaluated_on(hub_datasets, caplog):
    # the input: a labelled train split and a benchmark's test split with every label -1
    hub_datasets["acme/bench"] = DatasetDict(train=split(["pizza", "apple pie"] * 10, label="labels"),
                                             test=split([-1] * 4, label="labels"))
    with caplog.at_level(logging.INFO):
        splits = load_splits(TrainConfig(dataset="acme/bench", num_workers=0))
    assert splits.eval_split == "stratified 10% hold-out of train" and len(splits.eval) == 2
    assert "acme/bench: the test split's labels are withheld (every one is -1 or null" in caplog.text
    assert splits.layout.recorded() == {"dataset_config": None, "image_column": "image", "label_column": "labels"}
    # the report's default is the same hold-out; asked for the hidden split, it says why it cannot score it
    dataset, names, where = eval_dataset(TrainConfig(dataset="acme/bench", num_workers=0), None)
    assert where == splits.eval_split and dataset["label"] == splits.eval["label"]
    with pytest.raises(DatasetError, match=r"acme/bench/test: its labels are withheld .* pass another --split"):
        eval_dataset(TrainConfig(dataset="acme/bench", num_workers=0), "test")

    # with a validation split, that is evaluated on, and test is not offered for scoring later
    hub_datasets["acme/bench"]["valid"] = split(["pizza", "apple pie"], label="labels", seed=5)
    caplog.clear()
    with caplog.at_level(logging.INFO):
        assert load_splits(TrainConfig(dataset="acme/bench", num_workers=0)).eval_split == "valid"
    assert "--split test" not in caplog.text


def test_train_valid_test_evaluates_on_valid_and_keeps_test_for_the_end(hub_datasets, caplog):
    hub_datasets["acme/dishes"] = DatasetDict(train=split([0, 1] * 2), valid=split([1, 0], seed=5),
                                              test=split([0, 1, 1], seed=9))
    with caplog.at_level(logging.INFO):
        splits = load_splits(TrainConfig(dataset="acme/dishes", num_workers=0))
    assert splits.eval_split == "valid" and len(splits.eval) == 2
    assert "acme/dishes: splits train = train, validation = valid, test = test" in caplog.text
    assert "the test split (3 images) is left untouched: score it once, at the end, with python -m " \
           "food101hf.report --split test" in caplog.text
    for asked in ("test", "testing", None, "valid", "validation"):  # the dataset's name, or the role
        where = eval_dataset(TrainConfig(dataset="acme/dishes", num_workers=0), asked)[2]
        assert where == {"test": "test", "testing": "test"}.get(asked, "valid")
    with pytest.raises(DatasetError, match=r"acme/dishes: no split 'extra' \(found train, valid, test\)"):
        eval_dataset(TrainConfig(dataset="acme/dishes", num_workers=0), "extra")


@pytest.mark.parametrize("valid, error", [
    ([0, -1, 1], r"acme/dishes/valid: 1 of 3 labels are missing or out of range .*-1, withheld \(1 row\)"),
    ([0, 1, 2, 2], r"acme/dishes/valid: 2 of 4 labels are missing or out of range for its 2 classes .*2 \(2 rows\)"),
])
def test_a_used_split_with_some_labels_missing_or_out_of_range_is_refused_before_training(hub_datasets, valid,
                                                                                          error):
    hub_datasets["acme/dishes"] = DatasetDict(train=split([0, 1] * 2), valid=unchecked_split(valid, CLASS_LABEL.names))
    with pytest.raises(DatasetError, match=error):
        load_splits(TrainConfig(dataset="acme/dishes", num_workers=0))


def test_a_string_label_no_training_image_has_is_refused(hub_datasets):
    hub_datasets["acme/dishes"] = DatasetDict(train=split(["pizza", "ramen"] * 2, Value("string")),
                                              validation=split(["pizza", "sushi"], Value("string")))
    with pytest.raises(DatasetError, match=r"acme/dishes: no readable training images for class\(es\) sushi"):
        load_splits(TrainConfig(dataset="acme/dishes", num_workers=0))


def test_column_flags_and_a_config_are_refused_for_a_local_folder(image_folder):
    load_splits(TrainConfig(dataset=str(image_folder), image_column="image", num_workers=0))  # a folder's own
    with pytest.raises(ConfigError, match=r"--dataset-config, --label-column: for a Hub dataset; .* is a local "
                                          r"folder"):
        load_splits(TrainConfig(dataset=str(image_folder), dataset_config="b", label_column="labels"))


# ---- what is recorded, and reused ----

def test_a_later_command_reads_the_dataset_as_the_recorded_run_did_unless_a_flag_says_otherwise():
    recipe = {"dataset": "acme/dishes", "dataset_config": "b", "image_column": "img", "label_column": "labels"}
    reused = reuse_layout(TrainConfig(dataset="acme/dishes", label_column="target"), recipe, Path("run"))
    assert (reused.dataset_config, reused.image_column, reused.label_column) == ("b", "img", "target")
    other = reuse_layout(TrainConfig(dataset="acme/other"), recipe, Path("run"))
    assert (other.dataset_config, other.image_column, other.label_column) == (None, None, None)


def test_a_later_command_holds_out_the_fraction_the_recorded_run_did(tmp_path):
    """A local folder is recorded relative to the recipe's folder: the same folder named another way is the same
    dataset. Its --val-fraction, unless given, is the run's: another fraction would evaluate on trained images."""
    (tmp_path / "photos").mkdir()
    (tmp_path / "run").mkdir()
    recipe = {"dataset": {"path": "../photos"}, "val_fraction": 0.3}
    reused = reuse_layout(PolishConfig(init="run", dataset=str(tmp_path / "photos")), recipe, tmp_path / "run")
    assert reused.val_fraction == 0.3
    given = reuse_layout(PolishConfig(init="run", dataset=str(tmp_path / "photos"), val_fraction=0.2), recipe,
                         tmp_path / "run")
    assert given.val_fraction == 0.2
    other = reuse_layout(PolishConfig(init="run", dataset="acme/dishes"), recipe, tmp_path / "run")
    assert other.val_fraction == TrainConfig().val_fraction


def test_the_space_examples_are_the_first_image_of_each_class():
    found = DatasetDict(train=split(["pizza", "pizza", "apple pie", "ramen"], Value("string")),
                        test=split([None], Value("string")))
    standard = standardize(found, resolve(found, "acme/dishes", None))
    examples = first_of_each_class(standard["train"], limit=2)
    assert [name for name, _ in examples] == ["apple pie", "pizza"]
    assert examples[1][1]["bytes"] == standard["train"].cast_column("image", ImageFeature(decode=False))[0]["image"][
        "bytes"]
    assert first_of_each_class(standard["test"], limit=2) == []


# ---- the real commands, through the real datasets client ----

def card(repo: str, configs: dict[str, dict[str, str]]) -> bytes:
    """A dataset card whose YAML maps each config to its splits' data files (no default when there are several)."""
    listing = [{"config_name": name, "data_files": [{"split": s, "path": p} for s, p in files.items()]}
               for name, files in configs.items()]
    return f"---\n{yaml.safe_dump({'configs': listing}, sort_keys=False)}---\n\n# {repo}\n".encode()


def layouts() -> dict[str, dict[str, bytes]]:
    """One Hub dataset repo per layout of the issue, 2 classes, a few 48x40 images each."""
    train = ["pizza", "apple pie"] * 6
    classes = ClassLabel(names=["apple pie", "pizza"])

    def shard(labels, feature=classes, **columns):
        return parquet(split([feature.str2int(v) if isinstance(feature, ClassLabel) and isinstance(v, str) else v
                              for v in labels], feature, **columns))

    return {
        # cifar10/beans: img and labels columns
        "acme/cifar": {"data/train-0.parquet": shard(train, image="img", label="labels"),
                       "data/validation-0.parquet": shard(["pizza", "apple pie"], image="img", label="labels")},
        # train/valid/test, as DatasetDict.push_to_hub writes a dict with a "valid" key (the card names the splits)
        "acme/valid": {"README.md": card("acme/valid", {"default": {"train": "data/train-*", "valid": "data/valid-*",
                                                                    "test": "data/test-*"}}),
                       "data/train-0.parquet": shard(train), "data/valid-0.parquet": shard(["apple pie", "pizza"]),
                       "data/test-0.parquet": shard(["pizza", "apple pie", "pizza"])},
        # two configs, no default
        "acme/configs": {"README.md": card("acme/configs", {"photos": {"train": "photos/train-*",
                                                                        "validation": "photos/validation-*"},
                                                             "drawings": {"train": "drawings/train-*"}}),
                         "photos/train-0.parquet": shard(train), "photos/validation-0.parquet": shard(train[:2]),
                         "drawings/train-0.parquet": shard(train[:4])},
        # a string label column, as pandas writes it
        "acme/strings": {"data/train-0.parquet": shard(train, Value("string"), label="target"),
                         "data/validation-0.parquet": shard(["apple pie", "pizza"], Value("string"), label="target")},
        # a benchmark: labelled train, test labels withheld (-1)
        "acme/bench": {"data/train-0.parquet": shard(train * 2), "data/test-0.parquet": shard([-1] * 4)},
    }


DRIVER = """
import json, runpy, sys
from accelerate.state import AcceleratorState
for command in json.loads(sys.argv[1]):
    AcceleratorState._reset_state(True)  # each command starts as a process of its own would: its own precision
    print("\\n>>> " + " ".join(command), file=sys.stderr, flush=True)
    sys.argv = command
    try:
        if command[0].endswith(".py"):
            runpy.run_path(command[0], run_name="__main__")
        else:
            runpy.run_module(command[0], run_name="__main__", alter_sys=True)
    except SystemExit as e:
        print("<<< exit", e.code, file=sys.stderr, flush=True)
"""


APP_EXAMPLES = """
import sys
from pathlib import Path
from food101hf.outputs import example_images
print("\\n".join(example_images(Path(sys.argv[1]), Path(sys.argv[2]))))
"""


@pytest.mark.slow
def test_every_layout_trains_polishes_and_reports_with_no_column_flag(tmp_path):
    tiny = ["--epochs", "1", "--image-size", "32", "--batch-size", "4", "--num-workers", "0", "--mixed-precision",
            "no", "--no-report"]
    train = ["--no-pretrained", "--freeze", "none", "--mixup", "0", "--cutmix", "0", "--warmup-epochs", "0", *tiny]
    commands = []
    for repo in layouts():
        out, flags = tmp_path / repo.split("/")[1], ["--dataset-config", "photos"] if repo == "acme/configs" else []
        if repo == "acme/configs":  # no config, or one it does not have: refused before anything loads a model
            commands += [["train.py", "--dataset", repo, *config, *train, "--output-dir", str(tmp_path / "refused")]
                         for config in ([], ["--dataset-config", "sketches"])]
        commands += [["train.py", "--dataset", repo, *flags, *train, "--output-dir", str(out)],
                     ["polish.py", "--init", str(out), *tiny, "--epochs", "0", "--bn-batches", "1",
                      "--output-dir", f"{out}-polished"],
                     ["food101hf.report", "--model", str(out), "--dataset", repo, "--num-workers", "0",
                      "--output-dir", f"{out}-report"]]
    commands += [["food101hf.report", "--model", str(tmp_path / "bench"), "--dataset", "acme/bench", "--split",
                  "test", "--output-dir", str(tmp_path / "refused")],
                 ["food101hf.hub", "push", str(tmp_path / "valid"), "acme/valid-model"],
                 ["food101hf.hub", "space", "acme/valid-model", "acme/valid-demo"]]
    with HubServer(token="hf_x") as hub:
        for repo, files in layouts().items():
            hub.add_repo(repo, files, repo_type="dataset")
        # one process runs every command as `python train.py ...` would (each one's start-up costs ~10 s here)
        env = {**os.environ, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0", "HF_HUB_DISABLE_XET": "1",
               "HF_HOME": str(tmp_path / "hf"), "HF_TOKEN": "hf_x", "PYTHONPATH": str(ROOT)}
        done = subprocess.run([sys.executable, "-c", DRIVER, json.dumps(commands)], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=900)
        space = hub.files("spaces/acme/valid-demo") if "spaces/acme/valid-demo" in hub.repos else {}
    logs = [(command, log) for command, log in zip(commands, done.stderr.split("\n>>> ")[1:])]
    assert len(logs) == len(commands), done.stderr[-3000:]

    def log_of(*words: str) -> str:
        return next(log for command, log in logs if all(word in command for word in words))

    failed = [" ".join(command) for command, log in logs if not log.endswith("<<< exit 0\n")]
    assert failed == [" ".join(c) for c in commands if str(tmp_path / "refused") in c], done.stderr[-5000:]
    refused = log_of("train.py", "acme/configs", str(tmp_path / "refused"))
    assert "error: acme/configs has 2 configs and no default: pass --dataset-config NAME, one of photos, " \
           "drawings\n<<< exit 2" in refused
    assert "error: acme/configs: no config 'sketches' (configs: photos, drawings); pass one of them as " \
           "--dataset-config\n<<< exit 2" in log_of("sketches")
    assert "error: acme/bench/test: its labels are withheld" in log_of("--split", "test")

    for repo in layouts():
        out = tmp_path / repo.split("/")[1]
        recipe = yaml.safe_load((out / "train_config.yaml").read_text())
        polished = yaml.safe_load((tmp_path / f"{out.name}-polished" / "train_config.yaml").read_text())
        assert {key: polished[key] for key in ("dataset_config", "image_column", "label_column")} == \
            {key: recipe[key] for key in ("dataset_config", "image_column", "label_column")}
        report = json.loads((tmp_path / f"{out.name}-report" / "metrics.json").read_text())
        assert report["eval_split"] == json.loads((out / "metrics.json").read_text())["eval_split"]
        assert json.loads((out / "config.json").read_text())["label_names"] == ["apple pie", "pizza"]

    cifar = yaml.safe_load((tmp_path / "cifar" / "train_config.yaml").read_text())
    assert (cifar["dataset_config"], cifar["image_column"], cifar["label_column"]) == ("default", "img", "labels")
    assert "# dataset splits: train = train, validation = validation" in (tmp_path / "cifar" / "train_config.yaml"
                                                                           ).read_text()
    assert "splits train = train, validation = valid, test = test" in log_of("train.py", "acme/valid")
    assert json.loads((tmp_path / "valid" / "metrics.json").read_text())["eval_split"] == "valid"
    valid_card = (tmp_path / "valid" / "README.md").read_text()
    assert "split: valid" in valid_card and "datasets:\n- acme/valid" in valid_card
    configs_card = (tmp_path / "configs" / "README.md").read_text()
    assert "config: photos" in configs_card and "(config `photos`)" in configs_card
    assert yaml.safe_load((tmp_path / "strings" / "train_config.yaml").read_text())["label_column"] == "target"
    bench = json.loads((tmp_path / "bench" / "metrics.json").read_text())
    assert bench["eval_split"] == "stratified 10% hold-out of train"
    assert "the test split's labels are withheld" in log_of("train.py", "acme/bench")
    # the Space's examples: the valid split's first image of each class, from the datasets cache
    assert sorted(name for name in space if name.startswith("examples/")) == ["examples/apple pie.jpeg",
                                                                               "examples/pizza.jpeg"]
    # the app's, offline, from the same cache: the same images, written to a folder of the app's
    shown = subprocess.run([sys.executable, "-c", APP_EXAMPLES, str(tmp_path / "valid"), str(tmp_path / "shown")],
                           cwd=ROOT, env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=300)
    assert sorted(Path(path).name for path in shown.stdout.splitlines()) == ["apple pie.jpeg", "pizza.jpeg"], \
        shown.stderr
    assert (tmp_path / "shown" / "pizza.jpeg").read_bytes() == space["examples/pizza.jpeg"]
