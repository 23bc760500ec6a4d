"""The loaders (food101hf.loaders): shuffled, drop_last training batches; every eval image once."""

from conftest import DATA_CONFIG
from food101hf.config import TrainConfig
from food101hf.data import load_splits
from food101hf.loaders import build_loaders


def test_loaders_drop_the_last_partial_batch_in_training_only(image_folder):
    cfg = TrainConfig(dataset=str(image_folder), batch_size=5, num_workers=0)
    train, evaluation = build_loaders(load_splits(cfg), cfg, DATA_CONFIG, 32, seed=0)
    assert [len(b["label"]) for b in train] == [5, 5, 5, 5]  # 24 images: the odd 4 are dropped
    sizes = [len(b["label"]) for b in evaluation]
    assert sizes == [5, 4]  # every eval image, once
    batch = next(iter(train))
    assert batch["pixel_values"].shape == (5, 3, 32, 32)
