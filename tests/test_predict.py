import json
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import timm
import torch
import torchvision
from PIL import Image, ImageOps
from safetensors.torch import load_file, save_file

import food101hf
from conftest import CLASSES, ROOT, export_model_folder, run_script
from food101hf.cli import run
from food101hf.errors import DivergedError, ImageError
from food101hf.images import DecodeRule, load_image
from food101hf.predict import Predictor, main


def scores(result: list[dict]) -> dict[str, float]:
    return {r["label"]: r["score"] for r in result}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return export_model_folder(tmp_path_factory.mktemp("model"), sorted(CLASSES), image_size=40)


@pytest.fixture(scope="module")
def predictor(model_dir):
    return Predictor(model_dir, precision="fp32")


@pytest.fixture(scope="module")
def photo(tmp_path_factory) -> str:
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("photos") / "dish.jpg"
    Image.fromarray(rng.integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(path, quality=95)
    return str(path)


def test_one_image_gives_labels_sorted_by_score_like_a_transformers_pipeline(predictor, photo):
    result = predictor(photo, top_k=2)
    assert [set(r) for r in result] == [{"label", "score"}] * 2
    assert result[0]["score"] >= result[1]["score"] and result[0]["label"] in CLASSES
    everything = predictor(photo, top_k=50)  # capped at the class count; probabilities sum to 1
    assert sorted(r["label"] for r in everything) == sorted(CLASSES)
    assert sum(r["score"] for r in everything) == pytest.approx(1.0, abs=1e-5)


def test_every_input_kind_gives_the_same_answer(predictor, photo):
    image = Image.open(photo)
    pixels = np.asarray(image.convert("RGB"))
    encoded = open(photo, "rb").read()
    from pathlib import Path

    results = predictor([photo, Path(photo), image, encoded, pixels], top_k=3)
    assert len(results) == 5 and all(r == results[0] for r in results)
    grey = predictor(pixels[:, :, 0], top_k=1)  # HxW uint8: greyscale
    assert grey == predictor(Image.fromarray(pixels[:, :, 0]), top_k=1)
    assert predictor([]) == []


def test_preprocessing_is_the_models_own_eval_transform(model_dir, predictor, photo):
    model = timm.create_model(f"local-dir:{model_dir}", pretrained=True).eval()
    cfg = timm.data.resolve_model_data_config(model)
    assert cfg["input_size"] == (3, 40, 40) and predictor.data_config == cfg
    # timm's eval transform on a uint8 tensor is within one grey level of the same transform on the PIL image
    pixels = predictor.preprocess(photo)
    reference = timm.data.create_transform(**cfg, normalize=False)(Image.open(photo).convert("RGB"))
    assert pixels.dtype == torch.uint8 and pixels.shape == reference.shape == (3, 40, 40)
    assert (pixels.int() - reference.int()).abs().max() <= 1
    # and the batched normalisation is timm's Normalize with the model's mean and std
    normalise = torchvision.transforms.Normalize(cfg["mean"], cfg["std"])
    with torch.no_grad():
        expected = model(normalise(pixels.float() / 255)[None]).softmax(-1)
    assert torch.allclose(predictor.probabilities(pixels[None]), expected, atol=1e-5)


def test_flip_tta_scores_a_photo_and_its_mirror_alike(model_dir, photo):
    tta = Predictor(model_dir, precision="fp32", tta=True)
    plain = Predictor(model_dir, precision="fp32")
    mirrored = ImageOps.mirror(Image.open(photo).convert("RGB"))
    assert scores(tta(mirrored, top_k=3)) == pytest.approx(scores(tta(photo, top_k=3)), abs=1e-6)
    assert scores(plain(mirrored, top_k=3)) != pytest.approx(scores(plain(photo, top_k=3)), abs=1e-6)


def test_a_big_jpeg_is_decoded_small_but_never_below_the_resize_target(tmp_path, predictor):
    path = tmp_path / "big.jpg"
    Image.new("RGB", (1600, 1200), (200, 100, 50)).save(path)
    assert load_image(str(path), DecodeRule(short_side=235)).size == (400, 300)  # 1/4; 1/8 would be 150 < 235 px
    assert load_image(str(path), DecodeRule(short_side=700)).size == (1600, 1200)
    assert load_image(str(path)).size == (1600, 1200)
    # the Predictor's rule is its eval transform's: the short side resized to floor(40 / crop_pct)
    crop_pct = predictor.data_config["crop_pct"]
    assert predictor.transform.rule == DecodeRule(short_side=math.floor(40 / crop_pct))


def test_unreadable_inputs_raise_an_error_naming_them(predictor, photo, tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ImageError, match="notes.jpg: cannot be read as an image"):
        predictor([photo, str(tmp_path / "notes.jpg")])
    with pytest.raises(ImageError, match="float32"):
        predictor(np.zeros((8, 8, 3), dtype=np.float32))
    for wrong in (42, [42]):
        with pytest.raises(TypeError, match="expected a path"):
            predictor(wrong)
    results = list(predictor.stream([b"garbage", photo], top_k=1))  # the others are still answered
    assert isinstance(results[0], ImageError) and results[1] == predictor(photo, top_k=1)


def test_truncated_jpeg_is_an_image_error(predictor, photo):
    data = open(photo, "rb").read()
    with pytest.raises(ImageError, match="bytes input"):
        predictor(data[: len(data) // 2])


def test_package_exposes_predict_and_predictor_lazily(model_dir, photo):
    light = subprocess.run([sys.executable, "-c", "import sys, food101hf; print('torch' in sys.modules)"],
                           capture_output=True, text=True, cwd=ROOT)
    assert light.stdout.strip() == "False"
    assert food101hf.Predictor is Predictor
    assert food101hf.predict(photo, model=model_dir, top_k=1, batch_size=4)[0]["label"] in CLASSES
    assert len(food101hf.predict([photo, photo], model=str(model_dir))) == 2


def test_cli_answers_every_readable_file_and_fails_on_the_others(model_dir, photo, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    Image.open(photo).save(folder / "a.png")
    (folder / "readme.txt").write_text("skipped: not an image extension")
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really")
    code = main(["--model", str(model_dir), "--top-k", "2", photo, str(tmp_path / "broken.jpg"), str(folder)])
    out, err = capsys.readouterr()
    lines = [json.loads(line) for line in out.splitlines()]
    assert [line["file"] for line in lines] == [photo, str(folder / "a.png")]
    assert all(len(line["predictions"]) == 2 for line in lines)
    assert err.splitlines() == [f"note: ignored 1 file that is not an image: {folder / 'readme.txt'}",
                                f"error: {tmp_path / 'broken.jpg'}: cannot be read as an image "
                                f"(cannot identify image file '{tmp_path / 'broken.jpg'}')"]
    assert code == 1
    assert main(["--model", str(model_dir), photo]) == 0
    with pytest.raises(FileNotFoundError, match="no-such-model: no such folder"):  # cli.run: one line, exit 2
        main(["--model", str(tmp_path / "no-such-model"), photo])


@pytest.mark.slow
def test_cli_module_runs_as_a_user_runs_it(model_dir, photo, tmp_path):
    (tmp_path / "bad.jpg").write_text("nope")
    result = run_script("-m", "food101hf.predict", "--model", str(model_dir), str(tmp_path / "bad.jpg"), photo)
    assert result.returncode == 1
    assert [json.loads(line)["file"] for line in result.stdout.splitlines()] == [photo]
    assert "bad.jpg: cannot be read as an image" in result.stderr and "Traceback" not in result.stderr


# --- the API apps use: every class, {label: score}, a bad image in a batch, None --------------------------------

def test_top_k_none_gives_every_class_best_first(predictor, photo):
    result = predictor(photo, top_k=None)
    assert sorted(r["label"] for r in result) == sorted(CLASSES)
    assert [r["score"] for r in result] == sorted((r["score"] for r in result), reverse=True)
    assert sum(r["score"] for r in result) == pytest.approx(1, abs=1e-5)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="top_k must be a positive integer, or None"):
            predictor(photo, top_k=bad)


def test_label_scores_are_a_dict_for_gradio_label(predictor, photo):
    as_dict = predictor.label_scores(photo)
    assert as_dict == scores(predictor(photo, top_k=None)) and list(as_dict) == [r["label"] for r in
                                                                                  predictor(photo, top_k=None)]
    assert len(predictor.label_scores(photo, top_k=2)) == 2
    assert predictor.label_scores([photo, photo]) == [as_dict, as_dict]


def test_a_batch_with_a_bad_image_answers_the_others_with_errors_skip(predictor, model_dir, photo, tmp_path, caplog):
    notes = tmp_path / "notes.jpg"
    notes.write_text("not an image")
    with pytest.raises(ImageError, match="notes.jpg: cannot be read as an image"):
        predictor([photo, str(notes), photo])
    result = predictor([photo, str(notes), None, photo], errors="skip")
    assert result[1] is None and result[2] is None
    assert result[0] == result[3] == predictor(photo)
    assert "notes.jpg: cannot be read as an image" in caplog.text and "None: no image" in caplog.text
    assert predictor.label_scores([str(notes), photo], errors="skip")[0] is None
    assert food101hf.predict([str(notes)], model=model_dir, errors="skip") == [None]
    with pytest.raises(ValueError, match="errors must be one of raise, skip"):
        predictor(photo, errors="ignore")


def test_none_is_a_clear_value_error(predictor):
    with pytest.raises(ValueError, match=r"no image given \(None\)"):
        predictor(None)
    with pytest.raises(ImageError, match="None: no image"):
        predictor([None])



@pytest.mark.parametrize("argument, value, message", [
    ("batch_size", 0, "batch_size must be a positive integer; got 0"),  # was an IndexError
    ("batch_size", -2, "batch_size must be a positive integer; got -2"),
    ("batch_size", 2.5, "batch_size must be a positive integer; got 2.5"),
    ("batch_size", True, "batch_size must be a positive integer; got True"),
    ("num_threads", 0, "num_threads must be a positive integer, or None for all cores; got 0"),
    ("precision", "fp8", "precision must be 'auto' or one of fp32, bf16, fp16, got 'fp8'"),
    ("tta", "yes", "tta must be True or False, got 'yes'"),
    ("device", "gpu", "device 'gpu' is not a torch device name (e.g. cpu, cuda, cuda:1, mps); devices here: cpu"),
    ("device", "cuda:99", "device 'cuda:99' is not present on this machine; devices here: cpu"),
    ("device", "cuda", "device 'cuda' is not present on this machine; devices here: cpu"),
])
def test_every_argument_is_checked_before_the_model_loads_naming_it(argument, value, message, tmp_path):
    if argument == "device" and torch.accelerator.is_available():
        pytest.skip("the devices listed are this machine's: the expected messages are a CPU-only machine's")
    nowhere = tmp_path / "no-model-here"  # the argument is refused first: the model is never looked for
    with pytest.raises(ValueError) as error:
        Predictor(nowhere, **{argument: value})
    assert str(error.value) == message
    if argument in ("batch_size", "device", "tta"):  # the ones predict() passes on
        with pytest.raises(ValueError) as error:
            food101hf.predict("dish.jpg", model=nowhere, **{argument: value})
        assert str(error.value) == message


def test_a_model_with_non_finite_weights_is_refused_by_predict_in_one_line(model_dir, tmp_path, capsys):
    diverged = tmp_path / "diverged"
    shutil.copytree(model_dir, diverged)
    weights = load_file(diverged / "model.safetensors")
    weights = {k: v.fill_(float("nan")) if k.startswith("layer4") and v.is_floating_point() else v
               for k, v in weights.items()}
    save_file(weights, diverged / "model.safetensors")
    with pytest.raises(DivergedError, match=rf"{diverged}: \d+ of \d+ weight tensors \(e.g. layer4.0.conv1.weight\) "
                                            rf"hold NaN or infinite values; the run that wrote it diverged"):
        Predictor(diverged)
    photo = tmp_path / "dish.png"
    Image.new("RGB", (40, 30)).save(photo)
    with pytest.raises(SystemExit) as exit_:
        run(main, ["--model", str(diverged), str(photo)])
    assert exit_.value.code == 3
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and err.startswith(f"error: {diverged}: ")
