import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from food101hf.demo import CLASSES, MARKER, SPLITS, default_demo_dir, main, make_demo, render_image


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.jpg"))}


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo(tmp_path_factory.mktemp("demo") / "data", train_per_class=3, val_per_class=2)


def test_layout_and_counts(demo):
    assert sorted(p.name for p in demo.iterdir()) == sorted([MARKER, *SPLITS])
    for split, count in zip(SPLITS, (3, 2)):
        assert sorted(p.name for p in (demo / split).iterdir()) == sorted(CLASSES)
        for dish in CLASSES:
            assert sorted(p.name for p in (demo / split / dish).iterdir()) == [f"{dish}_{i}.jpg" for i in range(count)]
    assert [p.name for p in demo.parent.iterdir()] == ["data"]  # no staging folder left behind


def test_images_are_rgb_of_the_requested_size(tmp_path):
    root = make_demo(tmp_path / "small", train_per_class=1, val_per_class=1, size=(40, 30))
    for path in root.rglob("*.jpg"):
        with Image.open(path) as image:
            assert (image.mode, image.size, image.format) == ("RGB", (40, 30), "JPEG")


def test_generation_is_bitwise_deterministic(demo, tmp_path):
    again = make_demo(tmp_path / "again", train_per_class=3, val_per_class=2)
    assert _files(again) == _files(demo)


def test_each_image_is_independent_of_how_many_are_generated(demo, tmp_path):
    more = _files(make_demo(tmp_path / "more", train_per_class=5, val_per_class=1))
    fewer = _files(demo)
    shared = [name for name in fewer if name in more]
    assert len(shared) == len(CLASSES) * (3 + 1)
    assert all(more[name] == fewer[name] for name in shared)


def test_complete_dataset_is_reused_and_new_parameters_regenerate(tmp_path):
    root = make_demo(tmp_path / "data", train_per_class=2, val_per_class=1)
    first = root / "train" / CLASSES[0] / f"{CLASSES[0]}_0.jpg"
    stamp, content = first.stat().st_mtime_ns, first.read_bytes()

    assert make_demo(root, train_per_class=2, val_per_class=1) == root
    assert first.stat().st_mtime_ns == stamp

    make_demo(root, train_per_class=2, val_per_class=1, seed=1)
    assert json.loads((root / MARKER).read_text())["seed"] == 1
    assert first.read_bytes() != content


def test_refuses_to_overwrite_a_folder_it_did_not_write(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        make_demo(tmp_path, train_per_class=1, val_per_class=1)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_classes_are_told_apart_by_the_colours_of_the_food():
    """Nearest class mean of the colour histogram of the image centre (where the food is), on unseen images."""
    def histogram(dish: str, index: int) -> np.ndarray:
        centre = np.asarray(render_image(dish, np.random.default_rng([7, index]), (48, 36)))[9:27, 12:36]
        counts = np.histogramdd(centre.reshape(-1, 3) // 64, bins=(4, 4, 4), range=[(0, 4)] * 3)[0].ravel()
        return counts / counts.sum()

    features = np.array([[histogram(dish, i) for i in range(30)] for dish in CLASSES])
    class_means = features[:, :20].mean(axis=1)
    held_out = features[:, 20:].reshape(-1, features.shape[-1])
    labels = np.repeat(np.arange(len(CLASSES)), 10)
    predicted = np.abs(held_out[:, None] - class_means[None]).sum(axis=-1).argmin(axis=1)
    assert (predicted == labels).mean() >= 0.5  # chance is 0.1


def test_images_of_one_class_vary():
    first, second = (np.asarray(render_image("pizza", np.random.default_rng(i))) for i in (0, 1))
    assert np.abs(first.astype(int) - second.astype(int)).mean() > 10


def test_default_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("FOOD101HF_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_demo_dir() == tmp_path / "xdg" / "food101hf" / "demo-v1"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert default_demo_dir() == Path.home() / ".cache" / "food101hf" / "demo-v1"
    monkeypatch.setenv("FOOD101HF_CACHE", str(tmp_path / "cache"))
    assert default_demo_dir() == tmp_path / "cache" / "demo-v1"


def test_command_line_writes_and_prints_the_folder(tmp_path, capsys):
    main([str(tmp_path / "cli"), "--train-per-class", "1", "--val-per-class", "1", "--seed", "3"])
    assert capsys.readouterr().out.strip() == str(tmp_path / "cli")
    assert json.loads((tmp_path / "cli" / MARKER).read_text())["seed"] == 3
    assert len(list((tmp_path / "cli").rglob("*.jpg"))) == 2 * len(CLASSES)
