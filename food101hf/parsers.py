"""The command lines of `python -m food101hf.report`, `python -m food101hf.predict` (`food101hf-predict`),
`python -m food101hf.hub`, `python -m food101hf.app` and `python -m food101hf.demo`, built without importing the
modules they run, so that --help and a bad flag answer before torch, timm, datasets, huggingface_hub, gradio or
numpy load (`cli.parse_early`).
train.py's and polish.py's come from their config dataclasses (`food101hf.flags`)."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

from .cli import ArgumentParser
from .config import MIXED_PRECISION, TrainConfig
from .errors import DatasetError, ModelNotFoundError, UsageError
from .hub_access import PLACEHOLDER, missing_folder, no_such_path


def _docstring(module: str) -> str:
    """A module's docstring, read without importing the module (and the libraries it imports)."""
    return ast.get_docstring(ast.parse((Path(__file__).parent / f"{module}.py").read_text(encoding="utf-8")),
                             clean=False).strip("\n")


def positive_int(text: str) -> int:
    """An argparse type: a whole number of at least 1 (`--batch-size 0` would do no work and say nothing)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


# ---- checks that run as the command line is parsed: a path that is not there is said so before anything loads ----

def _model_is_there(args: argparse.Namespace) -> None:
    if args.model and (missing := missing_folder(args.model)):
        raise ModelNotFoundError(f"--model {missing}")


def _dataset_is_there(args: argparse.Namespace) -> None:
    if args.dataset != "demo" and (missing := missing_folder(args.dataset)):
        raise DatasetError(f"--dataset {missing}")


def _inputs_are_there(args: argparse.Namespace) -> None:
    missing = [path for path in args.inputs if not Path(path).expanduser().exists()]
    if len(missing) == 1:
        raise UsageError(no_such_path(missing[0], "file or folder"))
    if missing:
        raise UsageError(f"no such files or folders (in {Path.cwd()}): {', '.join(missing)}")


def _examples_are_there(args: argparse.Namespace) -> None:
    if args.examples and not Path(args.examples).expanduser().is_dir():
        raise UsageError(f"--examples {no_such_path(args.examples)}")


def _hub_paths_are_there(args: argparse.Namespace) -> None:
    for name in ("repo_id", "space_id", "model"):  # the push command train.py printed, pasted as it was
        if getattr(args, name, "").partition("/")[0] == PLACEHOLDER:
            raise UsageError(f"{getattr(args, name)}: replace {PLACEHOLDER} with your Hub user or organisation name "
                             f"(`hf auth whoami` prints yours)")
    if args.command == "push" and not Path(args.folder).expanduser().is_dir():
        raise UsageError(no_such_path(args.folder))
    if args.command == "space" and (missing := missing_folder(args.model)):
        raise ModelNotFoundError(missing)


def report_parser() -> ArgumentParser:
    """`python -m food101hf.report`: see food101hf/report.py."""
    defaults = TrainConfig()
    parser = ArgumentParser(prog="python -m food101hf.report", description=_docstring("report"),
                            usage="%(prog)s --dataset DATASET (--model MODEL --output-dir DIR | --audit) [options]")
    required, options = parser.required, parser.options
    required.add_argument("--dataset", required=True, help="Hub dataset id, local image folder, or 'demo'")
    required.add_argument("--model", help="for a report: a folder written by train.py or polish.py, or a Hub repo "
                                          "id (org/name[@revision])")
    required.add_argument("--output-dir", help="where to write the report (required) or the audit (optional)")
    options.add_argument("--audit", action="store_true", help="audit the dataset's files instead of a model: modes, "
                                                              "sizes, duplicates and unreadable files per split")
    options.add_argument("--split", help="split to evaluate, by its name in the dataset or its role (validation, "
                                         "test, train); default: the one train.py evaluates on: validation, else "
                                         "test (never one whose labels are withheld), else the stratified hold-out "
                                         "of train (set by --val-fraction)")
    options.add_argument("--image-size", type=positive_int, help="evaluation resolution; default: the model's own")
    options.add_argument("--tta", action="store_true", help="average the logits over each image and its mirror")
    options.add_argument("--batch-size", type=positive_int, default=64,
                         help="images per process per step (default: 64)")
    options.add_argument("--num-workers", type=int, default=defaults.num_workers,
                         help=f"DataLoader worker processes (default: {defaults.num_workers})")
    options.add_argument("--max-eval-samples", type=positive_int,
                         help="evaluate only a seeded random N images; default: all")
    options.add_argument("--val-fraction", type=float, help=f"as in train.py (default: the model's train_config.yaml "
                                                            f"on its dataset, else {defaults.val_fraction})")
    options.add_argument("--seed", type=int, default=defaults.seed, help=f"as in train.py (default: {defaults.seed})")
    recorded = "default: as the model's run read its dataset (train_config.yaml), else as train.py detects it"
    options.add_argument("--dataset-config", metavar="NAME", help=f"config of a Hub dataset that has several; "
                                                                  f"{recorded}")
    options.add_argument("--image-column", metavar="NAME", help=f"image column of a Hub dataset; {recorded}")
    options.add_argument("--label-column", metavar="NAME", help=f"label column of a Hub dataset; {recorded}")
    options.add_argument("--mixed-precision", default=defaults.mixed_precision, choices=MIXED_PRECISION,
                         help=f"as in train.py (default: {defaults.mixed_precision})")
    parser.checks += [_dataset_is_there, _model_is_there]
    return parser

PREDICT_EPILOG = """output:
  one JSON line per image on stdout, in input order (folders expand to their image files, sorted):
    {"file": "dish.jpg", "predictions": [{"label": "ramen", "score": 0.93}, ...]}   best first, --top-k of them
  an unreadable file, or a folder without images: one "error: ..." line on stderr; the others are still answered

exit status:
  0  every image answered
  1  some inputs could not be read (each named on stderr)
  2  a bad flag (a --device this machine lacks too), a path that does not exist, or the model cannot be loaded
     (one line on stderr)
  3  the model's weights hold NaN or infinite values: the run that wrote it diverged (one line on stderr)"""


def predict_parser() -> ArgumentParser:
    """`python -m food101hf.predict` / `food101hf-predict`: see food101hf/predict.py."""
    parser = ArgumentParser(prog="python -m food101hf.predict", description=_docstring("predict"),
                            epilog=PREDICT_EPILOG, usage="%(prog)s --model MODEL [options] FILES_OR_FOLDERS...")
    required, options = parser.required, parser.options
    required.add_argument("--model", required=True, help="folder written by train.py/polish.py, or Hub repo id "
                                                         "org/name[@revision]")
    required.add_argument("inputs", nargs="+", metavar="FILES_OR_FOLDERS", help="image files, or folders of them")
    options.add_argument("--top-k", type=positive_int, default=5, help="predictions per image, best first (default: 5)")
    options.add_argument("--batch-size", type=positive_int, default=32, help="images per forward pass (default: 32)")
    options.add_argument("--device", help="e.g. cpu, cuda, cuda:1; default: cuda if available, else cpu (one that "
                                           "is not here is refused, naming those that are)")
    options.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                         help="autocast dtype; auto: bf16 where the hardware has it, else fp32 (default: auto)")
    options.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    options.add_argument("-v", "--verbose", action="store_true", help="say on stderr how many torch threads run")
    parser.checks += [_model_is_there, _inputs_are_there]
    return parser


def hub_parser() -> ArgumentParser:
    """`python -m food101hf.hub`: see food101hf/hub.py."""
    parser = ArgumentParser(prog="python -m food101hf.hub", description=_docstring("hub"))
    commands = parser.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    push = commands.add_parser("push", help="upload an output folder of train.py or polish.py",
                               description="Upload an output folder of train.py or polish.py: weights, config, a "
                                           "model card written for the repo, metrics, recipe and report/. Nothing "
                                           "in the folder changes unless the push succeeds.")
    push.required.add_argument("folder", help="a folder written by train.py or polish.py")
    push.required.add_argument("repo_id", help="the Hub repo to push to, org/name (created if missing)")
    push.options.add_argument("--private", action="store_true", help="create the repo as private")
    push.options.add_argument("--revision", help="branch to push to (created if missing); default: main")
    push.options.add_argument("--commit-message", help="default: 'Upload FOLDER with food101hf'")
    space = commands.add_parser("space", help="create or update a Gradio Space that serves a pushed model",
                                description="Create or update a Gradio Space (app.py, food101hf's modules, pinned "
                                            "requirements, example images, Space card) that serves a model repo.")
    space.required.add_argument("model", help="model repo (org/name[@revision]) or an output folder pushed with "
                                              "`push`")
    space.required.add_argument("space_id", help="the Space to create or update, org/name")
    space.options.add_argument("--private", action="store_true", help="create the Space as private")
    parser.checks.append(_hub_paths_are_there)
    return parser


def app_parser() -> ArgumentParser:
    """`python -m food101hf.app`: see food101hf/app.py."""
    parser = ArgumentParser(prog="python -m food101hf.app", description=_docstring("app"))
    required, options = parser.required, parser.options
    required.add_argument("--model", required=True, help="folder written by train.py/polish.py, or Hub repo id "
                                                         "org/name[@revision]")
    options.add_argument("--examples", help="folder of example images to offer (default: from the model's dataset)")
    options.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    options.add_argument("--server-name", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    options.add_argument("--server-port", type=int, help="port (default 7860, or the next free one)")
    parser.checks += [_model_is_there, _examples_are_there]
    return parser


def demo_parser() -> ArgumentParser:
    """`python -m food101hf.demo`: see food101hf/demo.py."""
    parser = ArgumentParser(prog="python -m food101hf.demo", description=_docstring("demo").splitlines()[0])
    parser.options.add_argument("dir", metavar="DIR", nargs="?", type=Path,
                                help="where to write the dataset (default: demo-vN in $FOOD101HF_CACHE, else in "
                                     "$XDG_CACHE_HOME/food101hf or ~/.cache/food101hf)")
    parser.options.add_argument("--train-per-class", type=int, default=80, help="(default: 80)")
    parser.options.add_argument("--val-per-class", type=int, default=20, help="(default: 20)")
    parser.options.add_argument("--seed", type=int, default=0, help="(default: 0)")
    return parser
