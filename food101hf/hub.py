"""Export to timm's Hub format, the model card, and pushing an output folder to the Hub.

    python -m food101hf.hub push OUTPUT_DIR ORG/NAME [--private] [--revision BRANCH] [--commit-message MSG]

The token comes from the environment (HF_TOKEN) or `hf auth login`, never from a file of ours.
"""

from __future__ import annotations

if __name__ == "__main__":  # answer --help and refuse bad flags before huggingface_hub loads
    from food101hf.cli import hub_parser, parse_early

    parse_early(hub_parser)

import contextlib
import copy
import json
import re
import shutil
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlparse

import yaml
from huggingface_hub import (EvalResult, ModelCard, ModelCardData, constants, create_branch, create_repo, get_token,
                             upload_folder)
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled
from huggingface_hub.utils import filter_repo_objects

WEIGHTS = "model.safetensors"
PUSHED_FILES = [WEIGHTS, "config.json", "README.md", "metrics.json", "train_config.yaml", "base_config.yaml",
                "report/*"]
FETCHED_FILES = [WEIGHTS, "config.json", "train_config.yaml"]  # what loading a model needs; nothing pickled
PICKLED_WEIGHTS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt"]  # removed from the repo on push: safetensors only


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
    ordinary timm model; pretrained_cfg records the size and crop the model was evaluated (and is served) at, as
    both its input size and its test input size (so `resolve_data_config(use_test_size=True)` agrees).
    """
    import torch
    from timm.models import save_for_hf
    from timm.utils.model import unfreeze_batch_norm_2d

    export = unfreeze_batch_norm_2d(copy.deepcopy(model)).float().to(memory_format=torch.contiguous_format)
    size = (3, image_size, image_size)
    save_for_hf(export, out_dir, model_config={"label_names": list(label_names)}, safe_serialization=True,
                data_config={"input_size": size, "test_input_size": size, "crop_pct": crop_pct})


def write_outputs(out_dir: str | Path, model, label_names: list[str], data_config: dict, image_size: int,
                  metrics: dict) -> None:
    """The whole output folder: weights + timm config, metrics.json (with image_size), and the model card.
    train_config.yaml is written at the start of the run, so a crashed run still says what it was."""
    from .checkpoint import resume_advice
    from .storage import staged_writes

    out_dir = Path(out_dir)
    advice = resume_advice(out_dir / "checkpoints")  # a failed write leaves the previous files and no partial one
    with staged_writes(out_dir, advice, files=f"{WEIGHTS}, config.json and metrics.json") as stage:
        export_model(model, stage, label_names, image_size, data_config["crop_pct"])
        (stage / "metrics.json").write_text(json.dumps(metrics | {"image_size": image_size}, indent=2) + "\n")
    with staged_writes(out_dir, advice, files="README.md") as stage:
        build_card(out_dir).save(stage / "README.md")


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


def _polish_summary(recipe: dict, base: dict | None, metrics: dict) -> str:
    """polish.py's recipe (its config has `init`), with the before/after numbers and how the base was trained."""
    bn = (f"BatchNorm statistics re-estimated on {recipe['bn_batches']} batches of {recipe['batch_size']} training "
          f"images (eval preprocessing)" if recipe.get("bn_reestimate") else "BatchNorm statistics kept")
    text = f"Polished from `{recipe['init']}` at {recipe['image_size']} px: {bn}"
    if recipe["epochs"]:
        text += (f", then {recipe['epochs']} epochs of fine-tuning, frozen `{recipe.get('freeze') or 'none'}`, "
                 f"{recipe['opt']} (lr {recipe['lr']} on a cosine to {recipe['min_lr']}, weight decay "
                 f"{recipe['weight_decay']}), Mixup {recipe['mixup']} / CutMix {recipe['cutmix']}, label smoothing "
                 f"{recipe['smoothing']}, mixed precision {recipe['mixed_precision']}")
    text += "."
    if "before_polish" in metrics and recipe["epochs"]:
        text += (f" Top-1 at {recipe['image_size']} px before the fine-tune: "
                 f"{metrics['before_polish']['top1'] * 100:.2f}%, after: {metrics['top1'] * 100:.2f}%.")
    if base:
        how = _polish_summary(base, None, {}) if "init" in base else _recipe_summary(base)
        text += f"\n\nThe base model ({base['image_size']} px, recipe in `base_config.yaml`): {how}"
    return text


def _is_repo_id(ref: str) -> bool:
    """`org/name` (optionally `@revision`) that is not a local path."""
    return bool(re.fullmatch(r"[\w.-]+/[\w.-]+(@.+)?", ref)) and not Path(ref).expanduser().exists()


def _base_model(recipe: dict, base: dict | None) -> str | None:
    if "init" in recipe:  # polished: the init repo, else what the base started from
        return recipe["init"].partition("@")[0] if _is_repo_id(recipe["init"]) else _base_model(base or {}, None)
    return f"timm/{recipe['model']}" if recipe.get("pretrained") else None


def build_card(folder: str | Path, repo_id: str | None = None, revision: str | None = None) -> ModelCard:
    """The model card for an output folder, built from its config.json, metrics.json and train_config.yaml (and
    base_config.yaml for a polished model). Local dataset paths appear by their folder name only."""
    folder = Path(folder)
    config = json.loads((folder / "config.json").read_text())
    metrics = json.loads((folder / "metrics.json").read_text())
    recipe = yaml.safe_load((folder / "train_config.yaml").read_text())
    base = yaml.safe_load((folder / "base_config.yaml").read_text()) if (folder / "base_config.yaml").is_file() \
        else None
    dataset = recipe["dataset"]
    on_hub = _is_repo_id(dataset)
    dataset_name = dataset if on_hub else Path(dataset).name  # "demo", or a local folder's name
    ref = f"{repo_id}@{revision}" if repo_id and revision else repo_id
    card_data = ModelCardData(
        library_name="timm",
        license="apache-2.0",
        pipeline_tag="image-classification",
        tags=["image-classification", "timm", "food101hf", "food"],
        datasets=[dataset] if on_hub else None,
        base_model=_base_model(recipe, base),
        model_name=repo_id or folder.name,
        eval_results=[
            EvalResult(task_type="image-classification", task_name="Image Classification",
                       dataset_type=dataset if on_hub else "imagefolder", dataset_name=dataset_name,
                       dataset_split=metrics.get("eval_split", "validation"),
                       dataset_args={"image_size": metrics["image_size"]},
                       metric_type="accuracy", metric_name=name, metric_value=round(metrics[key], 4),
                       metric_config=f"{metrics['image_size']}px")
            for key, name in (("top1", "Top-1 accuracy"), ("top5", "Top-5 accuracy"))
        ],
    )
    summary = _polish_summary(recipe, base, metrics) if "init" in recipe else _recipe_summary(recipe)
    return ModelCard.from_template(
        card_data, template_str=CARD_TEMPLATE,
        title=repo_id or folder.name, architecture=config["architecture"], dataset=dataset_name,
        num_classes=config["num_classes"], image_size=metrics["image_size"],
        eval_split=metrics.get("eval_split", "validation"), num_eval_samples=metrics["num_eval_samples"],
        top1=metrics["top1"], top5=metrics["top5"], eval_loss=metrics["eval_loss"],
        extra_results=metrics.get("card_extra", ""),
        error_analysis=(folder / "report" / "card.md").read_text(encoding="utf-8")
        if (folder / "report" / "card.md").is_file() else "",
        load_id=f"hf-hub:{ref}" if ref else f"local-dir:{folder}", model_ref=ref or str(folder),
        recipe_summary=summary, recipe_yaml=yaml.safe_dump(recipe, sort_keys=False),
    )


def _stage(folder: Path, staging: Path, card: ModelCard) -> None:
    """The push as a folder of its own: links to the files of `folder` that are pushed (copies where links are not
    allowed) and the card written for the repo, so that nothing in `folder` changes before the push succeeds."""
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    for name in filter_repo_objects(files, allow_patterns=PUSHED_FILES, ignore_patterns=["README.md"]):
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.symlink_to((folder / name).resolve())
        except OSError:  # e.g. Windows without the symlink privilege
            shutil.copy2(folder / name, target)
    card.save(staging / "README.md")


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                commit_message: str | None = None) -> str:
    """Upload the weights, config, metrics, recipe, report/ and a model card written for `repo_id` (always: the
    card describes this folder, whatever the repo held) in one commit, and remove any pickled weights the repo may
    hold. The upload is staged outside `folder`; its README.md becomes the pushed card only once the push has
    succeeded, so a failed push changes nothing on disk. The token is huggingface_hub's: HF_TOKEN or
    `hf auth login`. Returns the commit URL; raises HubError saying what to do."""
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise HubError(f"{folder} has no {WEIGHTS}: push a folder written by train.py or polish.py")
    card = build_card(folder, repo_id, revision)
    kept = (f"the export in {folder} is kept; push it later with "
            f"`python -m food101hf.hub push {folder} {repo_id}`")
    if constants.HF_HUB_OFFLINE:
        raise HubError(f"HF_HUB_OFFLINE is set, so nothing can be pushed to {repo_id}; {kept}")
    if get_token() is None:
        raise HubError(f"no Hub token: set HF_TOKEN or run `hf auth login` to push to {repo_id}; {kept}")
    require_hub(f"pushing to {repo_id}", hint=kept)
    with tempfile.TemporaryDirectory(prefix="food101hf-push-") as staging:
        try:
            _stage(folder, Path(staging), card)
        except OSError as e:
            raise HubError(f"could not stage the push in {staging}: {e}; {kept}") from None
        try:
            create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision:
                create_branch(repo_id, branch=revision, exist_ok=True)
            commit = upload_folder(repo_id=repo_id, folder_path=staging, allow_patterns=PUSHED_FILES,
                                   delete_patterns=PICKLED_WEIGHTS, revision=revision,
                                   commit_message=commit_message or f"Upload {folder.name} with food101hf")
        except HfHubHTTPError as e:
            raise HubError(f"the Hub refused the push to {repo_id}: {e}. Check that your token (HF_TOKEN or "
                           f"`hf auth login`) has write access; {kept}") from None
    from .storage import StorageError, staged_writes

    try:  # the folder's card now says where the model lives
        with staged_writes(folder, f"The push to {repo_id} succeeded; only the local card is stale",
                           files="README.md") as stage:
            card.save(stage / "README.md")
    except StorageError as e:
        raise HubError(str(e)) from None
    return commit.commit_url


def push_run(folder: str | Path, cfg) -> str:
    """`push_folder` with a run's --push-to-hub, --hub-private, --hub-revision and --hub-commit-message."""
    return push_folder(folder, cfg.push_to_hub, private=cfg.hub_private, revision=cfg.hub_revision,
                       commit_message=cfg.hub_commit_message)


def main(argv: list[str] | None = None) -> int:
    from .cli import hub_parser

    args = hub_parser().parse_args(argv)
    print(push_folder(args.folder, args.repo_id, private=args.private, revision=args.revision,
                      commit_message=args.commit_message))
    return 0


if __name__ == "__main__":
    from food101hf import hub  # the package's module (not this __main__ copy): its errors are the ones run knows
    from food101hf.cli import run

    run(hub.main)
