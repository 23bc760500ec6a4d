"""Export to timm's Hub format, the model card, and pushing an output folder to the Hub.

    python -m food101hf.hub push OUTPUT_DIR ORG/NAME [--private] [--revision BRANCH] [--commit-message MSG]

The token comes from the environment (HF_TOKEN) or `hf auth login`, never from a file of ours.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

import yaml
from huggingface_hub import EvalResult, ModelCard, ModelCardData, constants, create_branch, create_repo, upload_folder
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

WEIGHTS = "model.safetensors"
PUSHED_FILES = [WEIGHTS, "config.json", "README.md", "metrics.json", "train_config.yaml", "report/*"]


class HubError(RuntimeError):
    """The Hub could not be used; the message says what to do instead."""


def require_hub(what: str, hint: str) -> None:
    """Fail in seconds when the Hub is unreachable, instead of after a minute of client retries."""
    if constants.HF_HUB_OFFLINE:
        return  # cached files only: the libraries raise at once if what we need is not cached
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=5).close()
    except OSError as e:
        raise HubError(f"cannot reach the Hub at {constants.ENDPOINT} for {what} ({e}). If it is already in your "
                       f"cache, rerun with HF_HUB_OFFLINE=1; otherwise {hint}.") from None


@contextlib.contextmanager
def hub_errors(what: str, hint: str):
    """Check the Hub is reachable, then turn the clients' network errors into one actionable HubError."""
    require_hub(what, hint)
    try:
        yield
    except (OfflineModeIsEnabled, LocalEntryNotFoundError, ConnectionError) as e:
        raise HubError(f"{what} is not in the local cache and the Hub cannot be used ({e}); {hint}.") from None


def export_model(model, out_dir: str | Path, label_names: list[str], image_size: int, crop_pct: float) -> None:
    """Write model.safetensors + config.json so `timm.create_model("local-dir:OUT", pretrained=True)` loads it.

    Frozen BatchNorms go back to plain BatchNorm2d and weights to the default memory format, so the export is an
    ordinary timm model; pretrained_cfg records the size and crop the model was evaluated (and is served) at.
    """
    from timm.models import save_for_hf
    from timm.utils.model import unfreeze_batch_norm_2d

    import torch

    export = unfreeze_batch_norm_2d(copy.deepcopy(model)).float().to(memory_format=torch.contiguous_format)
    save_for_hf(export, out_dir, model_config={"label_names": list(label_names)}, safe_serialization=True,
                data_config={"input_size": (3, image_size, image_size), "crop_pct": crop_pct})


def write_outputs(out_dir: str | Path, model, label_names: list[str], data_config: dict, image_size: int,
                  metrics: dict) -> None:
    """The whole output folder: weights + timm config, metrics.json (with image_size), and the model card.
    train_config.yaml is written at the start of the run, so a crashed run still says what it was."""
    out_dir = Path(out_dir)
    export_model(model, out_dir, label_names, image_size, data_config["crop_pct"])
    (out_dir / "metrics.json").write_text(json.dumps(metrics | {"image_size": image_size}, indent=2) + "\n")
    build_card(out_dir).save(out_dir / "README.md")


CARD_TEMPLATE = """---
{{ card_data }}
---

# {{ title }}

A timm `{{ architecture }}` fine-tuned on {{ dataset }} with [food101hf](https://github.com/food101hf/food101hf)
({{ num_classes }} classes, {{ image_size }} px).

## Results

Evaluated on {{ eval_split }} ({{ num_eval_samples }} images, {{ image_size }} px, center crop):

| metric | value |
|---|---|
| top-1 | {{ "%.2f" | format(top1 * 100) }}% |
| top-5 | {{ "%.2f" | format(top5 * 100) }}% |
| eval loss | {{ "%.4f" | format(eval_loss) }} |
{{ extra_results }}
{{ error_analysis }}
## How to use

```python
import timm, torch
model = timm.create_model("{{ load_id }}", pretrained=True).eval()
cfg = timm.data.resolve_model_data_config(model)
transform = timm.data.create_transform(**cfg)
labels = model.pretrained_cfg["label_names"]
```

or, with food101hf installed:

```python
from food101hf import predict
predict("dish.jpg", model="{{ model_ref }}")  # [{"label": ..., "score": ...}, ...]
```

## Training recipe

{{ recipe_summary }}

```yaml
{{ recipe_yaml }}```

Weights are stored as safetensors only.
"""


def _recipe_summary(recipe: dict) -> str:
    frozen = recipe.get("freeze") or "none"
    start = f"ImageNet weights of `{recipe['model']}`" if recipe.get("pretrained") else "random initialisation"
    return (f"From {start}; frozen: `{frozen}`. {recipe['epochs']} epochs at {recipe['image_size']} px, "
            f"{recipe['opt']} (lr {recipe['lr']}, weight decay {recipe['weight_decay']}), cosine schedule with "
            f"{recipe['warmup_epochs']} warmup epochs, Mixup {recipe['mixup']} / CutMix {recipe['cutmix']}, label "
            f"smoothing {recipe['smoothing']}, gradient clipping {recipe['clip_grad']}, mixed precision "
            f"{recipe['mixed_precision']}.")


def build_card(folder: str | Path, repo_id: str | None = None) -> ModelCard:
    """The model card for an output folder, built from its config.json, metrics.json and train_config.yaml, with
    the error analysis section that food101hf.report writes into report/card.md when the folder has one."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    recipe = yaml.safe_load((folder / "train_config.yaml").read_text())
    dataset = recipe["dataset"]
    on_hub = not (dataset == "demo" or Path(dataset).expanduser().exists())
    card_data = ModelCardData(
        library_name="timm",
        license="apache-2.0",
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", "food101hf", "food"],
        datasets=[dataset] if on_hub else None,
        base_model=f"timm/{recipe['model']}" if recipe.get("pretrained") else None,
        model_name=repo_id or folder.name,
        eval_results=[
            EvalResult(task_type="image-classification", dataset_type=dataset if on_hub else "imagefolder",
                       dataset_name=dataset, dataset_split=metrics.get("eval_split", "validation"),
                       metric_type="accuracy", metric_name=name, metric_value=round(metrics[key], 4),
                       metric_config=f"{metrics['image_size']}px")
            for key, name in (("top1", "Top-1 accuracy"), ("top5", "Top-5 accuracy"))
        ],
    )
    load_id = f"hf-hub:{repo_id}" if repo_id else f"local-dir:{folder}"
    return ModelCard.from_template(
        card_data, template_str=CARD_TEMPLATE,
        title=repo_id or folder.name, architecture=config["architecture"], dataset=dataset,
        num_classes=config["num_classes"], image_size=metrics["image_size"],
        eval_split=metrics.get("eval_split", "validation"), num_eval_samples=metrics["num_eval_samples"],
        top1=metrics["top1"], top5=metrics["top5"], eval_loss=metrics["eval_loss"],
        extra_results=metrics.get("card_extra", ""),
        error_analysis=(folder / "report" / "card.md").read_text(encoding="utf-8")
        if (folder / "report" / "card.md").is_file() else "",
        load_id=load_id, model_ref=repo_id or str(folder),
        recipe_summary=_recipe_summary(recipe), recipe_yaml=yaml.safe_dump(recipe, sort_keys=False),
    )


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                commit_message: str | None = None) -> str:
    """Regenerate the card for `repo_id`, then upload the folder's weights, config, card and results."""
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise HubError(f"{folder} has no {WEIGHTS}: push a folder written by train.py or polish.py")
    build_card(folder, repo_id).save(folder / "README.md")
    with hub_errors(f"pushing to {repo_id}", hint=f"the export in {folder} is kept; push it later with "
                                                  f"`python -m food101hf.hub push {folder} {repo_id}`"):
        try:
            url = create_repo(repo_id, private=private, exist_ok=True, repo_type="model").repo_id
            if revision:
                create_branch(url, branch=revision, exist_ok=True)
            commit = upload_folder(repo_id=url, folder_path=folder, allow_patterns=PUSHED_FILES,
                                   revision=revision, commit_message=commit_message or f"Upload {folder.name}")
        except HfHubHTTPError as e:
            raise HubError(f"the Hub refused the push to {repo_id}: {e}. Check that you are logged in "
                           f"(`hf auth login` or HF_TOKEN) with write access; the export in {folder} is kept."
                           ) from None
    return commit.commit_url


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m food101hf.hub", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    push = commands.add_parser("push", help="upload an output folder of train.py or polish.py")
    push.add_argument("folder")
    push.add_argument("repo_id")
    push.add_argument("--private", action="store_true", help="create the repo as private")
    push.add_argument("--revision", help="branch to push to (created if missing)")
    push.add_argument("--commit-message")
    args = parser.parse_args(argv)
    try:
        url = push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision,
                          commit_message=args.commit_message)
    except HubError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(url)
    return 0


if __name__ == "__main__":
    sys.exit(main())
