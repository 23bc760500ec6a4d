"""What every entry point shares on the console: the help-screen format, the log format, and how a failure the
user caused with a flag ends (one line, exit status 2). Light imports only, so that parsing the command line and
answering --help never waits for torch, timm or datasets (4-11 s) to load.

    if __name__ == "__main__":
        run(main)
"""

from __future__ import annotations

import argparse
import ast
import difflib
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

USAGE_ERROR = 2  # argparse's exit status for a bad command line; ours for every failure a flag caused
MIXED_PRECISION = ("auto", "no", "fp16", "bf16")
GRACE_S = 5.0  # how long a process other than rank 0 lets rank 0 say a failure both met (see `run`)


class UsageError(ValueError):
    """A command line that cannot work: the message names the flag and says what would."""


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The description keeps its lines (example commands stay copy-pasteable); help texts are wrapped."""

    def __init__(self, prog: str):
        super().__init__(prog, max_help_position=32, width=min(110, max(80, _terminal_width())))


def _terminal_width() -> int:
    try:
        return os.get_terminal_size().columns
    except OSError:
        return 100


class ArgumentParser(argparse.ArgumentParser):
    """argparse with our help format, no abbreviated flags, the flags in two groups (`required` listed first, then
    `options`), and errors raised as UsageError (one line, printed by `run`) instead of a usage block; an unknown
    flag gets the closest valid one suggested."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=HelpFormatter, allow_abbrev=False, add_help=False, **kwargs)
        self.required = self.add_argument_group("required")
        self.options = self.add_argument_group("options")
        self.options.add_argument("-h", "--help", action="help", help="show this help and exit")

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            flags = [s for action in self._actions for s in action.option_strings]
            hints = [f"{flag} (did you mean {', '.join(close)}?)" if (close := difflib.get_close_matches(
                flag.split("=")[0], flags, n=2, cutoff=0.7)) else flag for flag in unknown]
            self.error(f"unrecognized arguments: {' '.join(hints)}")
        return parsed

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (`{self.prog} --help` lists the flags)")


def parse_early(build: Callable[[], ArgumentParser]) -> None:
    """For a `python -m` module whose imports are heavy: answer --help, and refuse a bad command line in one line
    (exit 2), before those imports run. `main` then parses the same command line again."""
    try:
        build().parse_args()
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def _docstring(module: str) -> str:
    """A module's docstring, read without importing the module (and the libraries it imports)."""
    return ast.get_docstring(ast.parse((Path(__file__).parent / f"{module}.py").read_text(encoding="utf-8")),
                             clean=False).strip("\n")


def report_parser() -> ArgumentParser:
    """`python -m food101hf.report`: see food101hf/report.py."""
    from .config import TrainConfig

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
    options.add_argument("--split", help="split to evaluate; default: validation or test, else the stratified "
                                         "hold-out train.py used (set by --val-fraction and --seed)")
    options.add_argument("--image-size", type=int, help="evaluation resolution; default: the model's own")
    options.add_argument("--tta", action="store_true", help="average the logits over each image and its mirror")
    options.add_argument("--batch-size", type=int, default=64, help="images per process per step (default: 64)")
    options.add_argument("--num-workers", type=int, default=defaults.num_workers,
                         help=f"DataLoader worker processes (default: {defaults.num_workers})")
    options.add_argument("--max-eval-samples", type=int, help="evaluate only a seeded random N images; default: all")
    options.add_argument("--val-fraction", type=float, default=defaults.val_fraction,
                         help=f"as in train.py (default: {defaults.val_fraction})")
    options.add_argument("--seed", type=int, default=defaults.seed, help=f"as in train.py (default: {defaults.seed})")
    options.add_argument("--image-column", default=defaults.image_column,
                         help=f"image column of a Hub dataset (default: {defaults.image_column})")
    options.add_argument("--label-column", default=defaults.label_column,
                         help=f"label column of a Hub dataset (default: {defaults.label_column})")
    options.add_argument("--mixed-precision", default=defaults.mixed_precision, choices=MIXED_PRECISION,
                         help=f"as in train.py (default: {defaults.mixed_precision})")
    return parser

PREDICT_EPILOG = """output:
  one JSON line per image on stdout, in input order (folders expand to their image files, sorted):
    {"file": "dish.jpg", "predictions": [{"label": "ramen", "score": 0.93}, ...]}   best first, --top-k of them
  an unreadable file, or a folder without images: one "error: ..." line on stderr; the others are still answered

exit status:
  0  every image answered
  1  some inputs could not be read (each named on stderr)
  2  a bad flag, or the model cannot be loaded (one line on stderr)"""


def predict_parser() -> ArgumentParser:
    """`python -m food101hf.predict` / `food101hf-predict`: see food101hf/predict.py."""
    parser = ArgumentParser(prog="python -m food101hf.predict", description=_docstring("predict"),
                            epilog=PREDICT_EPILOG, usage="%(prog)s --model MODEL [options] FILES_OR_FOLDERS...")
    required, options = parser.required, parser.options
    required.add_argument("--model", required=True, help="folder written by train.py/polish.py, or Hub repo id "
                                                         "org/name[@revision]")
    required.add_argument("inputs", nargs="+", metavar="FILES_OR_FOLDERS", help="image files, or folders of them")
    options.add_argument("--top-k", type=int, default=5, help="predictions per image, best first (default: 5)")
    options.add_argument("--batch-size", type=int, default=32, help="images per forward pass (default: 32)")
    options.add_argument("--device", help="e.g. cpu, cuda, cuda:1; default: cuda if available, else cpu")
    options.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                         help="autocast dtype; auto: bf16 where the hardware has it, else fp32 (default: auto)")
    options.add_argument("--tta", action="store_true", help="average with the horizontally flipped image")
    options.add_argument("-v", "--verbose", action="store_true", help="say on stderr how many torch threads run")
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
    return parser


def rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def setup_logging() -> None:
    """Timestamped INFO lines on the main process; other processes only say errors, prefixed with their rank.
    Accelerate's line per checkpoint file and the Hub client's line per HTTP request are muted."""
    prefix = f"[rank {rank()}] " if rank() else ""
    logging.basicConfig(format=f"%(asctime)s %(levelname)s {prefix}%(message)s", datefmt="%H:%M:%S",
                        level=logging.ERROR if rank() else logging.INFO, force=True)
    for chatty in ("accelerate.accelerator", "accelerate.checkpointing", "httpx", "httpcore", "timm"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logging.getLogger("food101hf.preemption").setLevel(logging.WARNING)  # each process's stop, in a requeue's log


def _user_errors() -> tuple[type[BaseException], ...]:
    """Failures a flag or a file the user named can cause; each carries a message that says what to do.
    (DatasetError, CheckpointError, ConfigError, ImageError are ValueErrors; HubError is the Hub's.)"""
    from .hub import HubError  # loaded by then wherever the Hub was used; costs ~0.3 s only on this error path

    return ValueError, FileNotFoundError, NotADirectoryError, HubError


def _process_group_started() -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized()


def _lost_peer(error: BaseException) -> bool:
    """A collective that failed because another process of the run exited (which has said why itself)."""
    import torch

    return isinstance(error, torch.distributed.DistError) or (
        isinstance(error, RuntimeError) and ("closed by peer" in str(error) or "reset by peer" in str(error)))


def run(main: Callable[[list[str] | None], int], argv: list[str] | None = None) -> NoReturn:
    """Run an entry point's `main` and exit with its status. A failure the user caused ends in one line on stderr
    and exit status 2, no traceback; anything else is a bug and keeps its traceback.

    Under torchrun every process runs the same checks on the same flags and files, so rank 0 meets the same
    failure and says it. Another process says its own only if it is still running GRACE_S later: torchrun stops
    the others within ~0.1 s of rank 0 exiting (its monitor interval), so the line is printed once, and a
    failure only that process met is still said. A process whose collective failed because another process
    exited (gloo: "Connection closed/reset by peer") leaves quietly: that process has said why."""
    try:
        sys.exit(main(argv))
    except Exception as error:  # noqa: BLE001 - re-raised unless it is one of the kinds above
        connected = _process_group_started()
        if connected and _lost_peer(error):
            _leave()
        if not isinstance(error, _user_errors()):
            raise
        if rank():
            time.sleep(GRACE_S)
        print(f"error: {f'[rank {rank()}] ' if rank() else ''}{error}", file=sys.stderr, flush=True)
        if connected:
            _leave()
        sys.exit(USAGE_ERROR)


def _leave() -> NoReturn:
    """Exit at once with USAGE_ERROR, without the interpreter's teardown: tearing down the process group waits
    for the other processes (seconds, or for ever if one is gone)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(USAGE_ERROR)


def next_steps(out: Path, cfg, example_image: str | None) -> str:
    """What a train.py/polish.py run made and what to run next, for a person at the console: a predict command on
    one of the run's own eval images (ready to paste), polishing (after train.py), sharing (unless pushed)."""
    folder, image = shlex.quote(str(out)), shlex.quote(example_image) if example_image else "YOUR_PHOTO.jpg"
    lines = [f"\nDone. In {out}/:",
             f"  model.safetensors, config.json   the model in timm's format: "
             f"timm.create_model(\"local-dir:{out}\", pretrained=True)",
             "  metrics.json                     top-1 / top-5 on the eval split, per epoch",
             "  README.md                        the model card"]
    if cfg.report:
        lines.append("  report/report.md                 error analysis: per-class accuracy, confused pairs, "
                     "confident mistakes")
    lines += ["Next:", f"  python -m food101hf.predict --model {folder} {image}"
              + ("   # an image of the eval split" if example_image else "")]
    if getattr(cfg, "init", None) is None:
        lines.append(f"  accelerate launch polish.py --init {folder} --output-dir {shlex.quote(f'{out}-224')}"
                     f"   # FixRes: fine-tune briefly at 224 px")
    if not cfg.push_to_hub:
        lines.append(f"  python -m food101hf.hub push {folder} YOUR_NAME/{out.name}   # share it (needs HF_TOKEN)")
    if cfg.dataset == "demo":
        lines.append("Note: the demo dataset is synthetic (generated drawings of 10 dishes, food101hf/demo.py): its "
                     "top-1 shows the pipeline works, not how a model does on real food photos.")
    return "\n".join(lines)
