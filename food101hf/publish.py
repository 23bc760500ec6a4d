"""Publishing an output folder: the export in timm's Hub format (`export_model`), the folder's result files and
model card (`write_outputs`, after every run), and the push to a Hub model repo (`push_folder`).

The token is huggingface_hub's (HF_TOKEN or `hf auth login`), never read or written by food101hf.
"""

from __future__ import annotations

import copy
import json
import shutil
import tempfile
from pathlib import Path

from huggingface_hub import constants, create_branch, create_repo, get_token, list_repo_files, upload_folder
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import filter_repo_objects

from .card import build_card, model_license
from .checkpoint import checkpoint_root, resume_advice
from .errors import DivergedError, HubError, StorageError
from .hub_access import require_hub
from .model import nonfinite_tensors
from .outputs import WEIGHTS, copy_recipe, read_recipes
from .storage import staged_writes

# the files food101hf writes into an output folder and pushes: a push makes the repo hold exactly the folder's
# (a previous push's report/ or base_config.yaml describes another model); other files in the repo are kept
PUSHED_FILES = [WEIGHTS, "config.json", "README.md", "metrics.json", "train_config.yaml", "base_config.yaml",
                "report/*"]
RECIPES = ("train_config.yaml", "base_config.yaml")
PICKLED_WEIGHTS = ["*.bin", "*.pt", "*.pth", "*.pkl", "*.ckpt"]  # removed from the repo on push: safetensors only


# pretrained_cfg fields that describe a published checkpoint (timm's tag, its paper, origin and licence): an export
# is not that checkpoint, so they go; the model card says where the weights came from.
CHECKPOINT_PROVENANCE = ("tag", "hf_hub_id", "origin_url", "paper_ids", "paper_name", "notes", "description",
                         "license")


def export_model(model, out_dir: str | Path, label_names: list[str], image_size: int, crop_pct: float,
                 license: str | None = None) -> None:
    """Write model.safetensors + config.json, loadable by timm (`local-dir:OUT`, `hf-hub:org/name`) and by
    transformers (`AutoModelForImageClassification`, `pipeline("image-classification")` through its TimmWrapper
    classes, with `label_names` as `id2label`).

    Frozen BatchNorms go back to plain BatchNorm2d and weights to the default memory format, so the export is an
    ordinary timm model; pretrained_cfg records the size and crop the model was evaluated (and is served) at, as
    both its input size and its test input size (so `resolve_data_config(use_test_size=True)` agrees, and so does
    transformers' TimmWrapperImageProcessor, which reads `input_size`). Raises DivergedError, writing nothing, if
    a weight or BatchNorm statistic is NaN or infinite.
    """
    import torch
    from timm.models import save_for_hf
    from timm.utils.model import unfreeze_batch_norm_2d

    export = unfreeze_batch_norm_2d(copy.deepcopy(model)).float().to(memory_format=torch.contiguous_format)
    if bad := nonfinite_tensors(export):  # training stops before this (engine.fit); a second line of defence
        raise DivergedError(f"refusing to export a model whose weights are not finite: {len(bad)} of "
                            f"{len(export.state_dict())} tensors (e.g. {bad[0]}) hold NaN or infinite values")
    size = (3, image_size, image_size)
    save_for_hf(export, out_dir, model_config={"label_names": list(label_names)}, safe_serialization=True,
                data_config={"input_size": size, "test_input_size": size, "crop_pct": crop_pct})
    config_file = Path(out_dir) / "config.json"
    config = json.loads(config_file.read_text())
    # timm records num_classes in model_args too; transformers' TimmWrapper passes num_classes=num_labels itself
    # and then **model_args, which fails with "got multiple values for keyword argument 'num_classes'". The root
    # num_classes is what both timm and transformers read.
    config.get("model_args", {}).pop("num_classes", None)
    for key in CHECKPOINT_PROVENANCE:
        config["pretrained_cfg"].pop(key, None)
    if license:
        config["pretrained_cfg"]["license"] = license
    config_file.write_text(json.dumps(config, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_outputs(out_dir: str | Path, model, label_names: list[str], data_config: dict, image_size: int,
                  metrics: dict) -> None:
    """The whole output folder: weights + timm config, metrics.json (with image_size), and the model card.
    train_config.yaml (and base_config.yaml after a polish) is written at the start of the run, so a crashed run
    still says what it was; the licence comes from it (`model_license`). Each file is staged and replaced whole:
    a failed write leaves the previous files and no partial one, and says how to resume."""
    out_dir = Path(out_dir)
    recipe, base = read_recipes(out_dir)
    advice = resume_advice(checkpoint_root(out_dir))
    with staged_writes(out_dir, advice, files=f"{WEIGHTS}, config.json and metrics.json") as stage:
        export_model(model, stage, label_names, image_size, data_config["crop_pct"], model_license(recipe, base))
        (stage / "metrics.json").write_text(json.dumps(metrics | {"image_size": image_size}, indent=2,
                                                       allow_nan=False) + "\n")
    with staged_writes(out_dir, advice, files="README.md") as stage:
        build_card(out_dir).save(stage / "README.md")


def pushed_files(folder: Path) -> list[str]:
    """The files of `folder` a push uploads, README.md (written for the repo) included."""
    files = [p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()]
    return sorted(set(filter_repo_objects(files, allow_patterns=PUSHED_FILES)) | {"README.md"})


def stale_files(repo_files: list[str], pushed: list[str]) -> list[str]:
    """The files of the repo a push deletes in its commit (upload_folder's `delete_patterns`, less what it
    uploads): food101hf's own that the folder no longer has, and pickled weights."""
    managed = filter_repo_objects(repo_files, allow_patterns=PUSHED_FILES + PICKLED_WEIGHTS)
    return sorted(set(managed) - set(pushed) - {".gitattributes"})


def _stage(folder: Path, staging: Path, pushed: list[str], card) -> None:
    """The push as a folder of its own: links to the files of `folder` that are pushed (copies where links are not
    allowed), the recipes with their local folders recorded as now (`outputs.copy_recipe`: a folder written by an
    earlier food101hf holds absolute paths) and the card written for the repo, so that nothing in `folder`
    changes before the push succeeds."""
    for name in pushed:
        target = staging / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if name == "README.md":
            card.save(target)
        elif name in RECIPES:
            copy_recipe(folder / name, target, folder)
        else:
            try:
                target.symlink_to((folder / name).resolve())
            except OSError:  # e.g. Windows without the symlink privilege
                shutil.copy2(folder / name, target)


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, revision: str | None = None,
                commit_message: str | None = None) -> str:
    """Make `repo_id` (at `revision`) hold this folder, in one commit: upload the weights, config, metrics,
    recipes, report/ and a model card written for `repo_id` (always: the card describes this folder, whatever the
    repo held), and delete the files of food101hf's a previous push left that this folder lacks (`stale_files`:
    an old report/, base_config.yaml...) and any pickled weights; the card lists what was deleted. Files anyone
    else added to the repo are kept. The upload is staged outside `folder`; its README.md becomes the pushed card
    only once the push has succeeded, so a failed push changes nothing on disk. The token is huggingface_hub's:
    HF_TOKEN or `hf auth login`. Returns the commit URL; raises HubError saying what to do."""
    folder = Path(folder)
    if not (folder / WEIGHTS).is_file():
        raise HubError(f"{folder} has no {WEIGHTS}: push a folder written by train.py or polish.py")
    pushed = pushed_files(folder)
    build_card(folder, repo_id, revision)  # a folder whose files cannot make a card fails before the Hub is asked
    kept = (f"the export in {folder} is kept; push it later with "
            f"`python -m food101hf.hub push {folder} {repo_id}`")
    if constants.HF_HUB_OFFLINE:
        raise HubError(f"HF_HUB_OFFLINE is set, so nothing can be pushed to {repo_id}; {kept}")
    if get_token() is None:
        raise HubError(f"no Hub token: set HF_TOKEN or run `hf auth login` to push to {repo_id}; {kept}")
    require_hub(f"pushing to {repo_id}", hint=kept, download=False)
    with tempfile.TemporaryDirectory(prefix="food101hf-push-") as staging:
        try:
            create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
            if revision:
                create_branch(repo_id, branch=revision, exist_ok=True)
            removed = stale_files(list_repo_files(repo_id, revision=revision), pushed)
            card = build_card(folder, repo_id, revision, removed)
            try:
                _stage(folder, Path(staging), pushed, card)
            except OSError as e:
                raise HubError(f"could not stage the push in {staging}: {e}; {kept}") from None
            # upload_folder deletes what matches delete_patterns and is not uploaded: `removed`, in this commit
            commit = upload_folder(repo_id=repo_id, folder_path=staging, allow_patterns=PUSHED_FILES,
                                   delete_patterns=PUSHED_FILES + PICKLED_WEIGHTS, revision=revision,
                                   commit_message=commit_message or f"Upload {folder.name} with food101hf",
                                   commit_description=f"Removed: {', '.join(removed)}" if removed else None)
        except HfHubHTTPError as e:
            raise HubError(f"the Hub refused the push to {repo_id}: {e}. Check that your token (HF_TOKEN or "
                           f"`hf auth login`) has write access; {kept}") from None
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
