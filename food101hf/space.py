"""A Hugging Face Space that serves a pushed model with food101hf's Gradio demo (food101hf/app.py).

    python -m food101hf.hub space MODEL SPACE_ID [--private]

MODEL is a model repo on the Hub (`org/name`, `org/name@revision`) or an output folder pushed with
`python -m food101hf.hub push` (its model card names the repo). The Space holds:

    README.md         Space metadata: Gradio SDK and Python version as installed here, app_file, the model, licence
    app.py            runs `food101hf.app` on the model repo
    food101hf/        the modules of this package the app imports (`app_modules`; it is not on PyPI)
    requirements.txt  food101hf's dependencies pinned to the versions installed here
    examples/         one image per class (up to 10) of the split the model was evaluated on, when its dataset is on
                      this machine: the demo, a Hub dataset in this machine's datasets cache (read with the config
                      and columns the run recorded; never downloaded for this), or a local folder when MODEL is the
                      output folder, whose recipe locates it (a pushed recipe names no path of this machine)
"""

from __future__ import annotations

import ast
import logging
import platform
import re
import shutil
import tempfile
from importlib import metadata
from pathlib import Path

from huggingface_hub import ModelCard, SpaceCard, SpaceCardData, create_repo, get_token, repo_exists, upload_folder
from huggingface_hub.errors import HfHubHTTPError

from .card import model_license
from .errors import HubError
from .hub_access import has_repo_id_form, hub_errors, is_repo_id, require_hub
from .outputs import example_images, read_recipes, trained_folder

APP = '''"""Serves {model} with food101hf's Gradio demo (food101hf/app.py). Spaces run `python app.py`."""

import sys

from food101hf.app import main

sys.exit(main(["--model", "{model}"{examples}]))
'''

SPACE_TEMPLATE = Path(__file__).with_name("templates") / "space_card.md"
logger = logging.getLogger(__name__)


def pushed_repo(model: str | Path) -> str:
    """The model repo a Space should serve: `model` itself if it is a repo id, else the repo a pushed output folder's
    card names (`hub push` writes it). Raises HubError for a folder that was never pushed."""
    if is_repo_id(str(model)):
        return str(model)
    card_file = Path(model) / "README.md"
    name = ModelCard.load(card_file).data.model_name if card_file.is_file() else None
    if not name or not has_repo_id_form(name):
        raise HubError(f"{model} has not been pushed to the Hub, and a Space serves a Hub model repo: run "
                       f"`python -m food101hf.hub push {model} ORG/NAME` first, then pass ORG/NAME (or the folder)")
    return name


def app_modules() -> list[Path]:
    """The package's files the Gradio app needs: `__init__.py`, app.py and every module of ours they import, at any
    depth, read from their import statements (those inside functions too); nothing of training or benchmarking."""
    package = Path(__file__).parent
    needed, todo = set(), ["__init__", "app"]
    while todo:
        name = todo.pop()
        if name in needed:
            continue
        needed.add(name)
        tree = ast.parse((package / f"{name}.py").read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("food101hf")):
                module = (node.module or "").removeprefix("food101hf").lstrip(".")
                todo += [module.split(".")[0]] if module else [alias.name for alias in node.names]
    return sorted(package / f"{name}.py" for name in needed)


def pinned_requirements() -> str:
    """food101hf's install_requires at the versions installed here, one `name==version` a line."""
    names = [re.match(r"[A-Za-z0-9_.-]+", r).group() for r in metadata.requires("food101hf") or []
             if "extra ==" not in r]
    return "".join(f"{name}=={metadata.version(name)}\n" for name in names)


def write_space(model: str, staging: Path) -> None:
    """Everything the Space holds, written into `staging` (see the module docstring)."""
    import gradio  # only here: the web framework is an optional extra (`.[app]`), not needed to push a model

    repo_id = pushed_repo(model)
    local = Path(model) if Path(model).is_dir() else trained_folder(repo_id)
    recipe, base = read_recipes(local)
    examples = example_images(local, staging / "examples")  # a Hub dataset's are written there
    for image in (Path(path) for path in examples if Path(path).parent != staging / "examples"):
        (staging / "examples").mkdir(exist_ok=True)
        shutil.copyfile(image, staging / "examples" / f"{image.parent.name}{image.suffix.lower()}")
    (staging / "app.py").write_text(APP.format(model=repo_id, examples=', "--examples", "examples"' if examples
                                               else ""))
    package = Path(__file__).parent
    for module in app_modules():
        target = staging / "food101hf" / module.relative_to(package)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(module, target)
    (staging / "requirements.txt").write_text(pinned_requirements())
    demo = recipe.get("dataset") == "demo"
    card_data = SpaceCardData(
        title=repo_id.partition("@")[0].split("/")[-1], sdk="gradio", sdk_version=gradio.__version__,
        python_version=".".join(platform.python_version_tuple()[:2]), app_file="app.py",
        models=[repo_id.partition("@")[0]], license=model_license(recipe, base),
        tags=["food101hf", "image-classification", "timm"], emoji="🍽️", colorFrom="yellow", colorTo="red",
        pinned=False, short_description="Classify a photo of a dish with a food101hf model")
    about = ("The model was trained on synthetic drawings (food101hf's offline demo), so it will not recognise real "
             "photos." if demo else "")
    SpaceCard.from_template(card_data, template_str=SPACE_TEMPLATE.read_text(encoding="utf-8"), title=card_data.title,
                            repo_id=repo_id, about=about).save(staging / "README.md")


def create_space(model: str | Path, space_id: str, *, private: bool = False) -> str:
    """Create (or update) the Gradio Space `space_id` serving `model` (see `pushed_repo`). Returns the commit URL.
    The token is huggingface_hub's (HF_TOKEN or `hf auth login`); raises HubError when the Hub cannot be used."""
    repo_id = pushed_repo(model)
    if get_token() is None:
        raise HubError(f"no Hub token: set HF_TOKEN or run `hf auth login` to create the Space {space_id}")
    hint = "check the model repo id and your connection"
    require_hub(f"creating the Space {space_id}", hint=hint, download=False)
    with hub_errors(f"model {repo_id}", hint=hint):
        if not repo_exists(repo_id.partition("@")[0]):
            raise HubError(f"{repo_id} is not a model repo on the Hub (or not visible to your token): push it first")
        with tempfile.TemporaryDirectory() as staging:
            write_space(str(model), Path(staging))
            try:
                create_repo(space_id, repo_type="space", space_sdk="gradio", private=private, exist_ok=True)
                commit = upload_folder(repo_id=space_id, repo_type="space", folder_path=staging,
                                       delete_patterns=["food101hf/**", "examples/**"],
                                       commit_message=f"Serve {repo_id} with food101hf's Gradio demo")
            except HfHubHTTPError as e:
                raise HubError(f"the Hub refused the Space {space_id}: {e}. Check that your token has write "
                               f"access") from None
    return commit.commit_url
