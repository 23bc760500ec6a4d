"""What every entry point shares on the console: the help-screen format, the log format, and how a failure the
user can fix ends (`errors.UserError`: one line, exit status 2). Light imports only, so that parsing the command
line and answering --help never waits for torch, timm or datasets (4-11 s) to load.

    if __name__ == "__main__":
        run(main)
"""

from __future__ import annotations

import argparse
import difflib
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import NoReturn

from .errors import UsageError, UserError

USAGE_ERROR = UserError.exit_status  # 2, argparse's exit status for a bad command line; ours for most user errors
GRACE_S = 5.0  # how long a process other than rank 0 lets rank 0 say a failure both met (see `run`)


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
    flag gets the closest valid one suggested. `checks` run on the parsed arguments (e.g. that a folder given
    exists) and raise a UserError: they run wherever the command line is parsed, in `parse_early` too."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, formatter_class=HelpFormatter, allow_abbrev=False, add_help=False, **kwargs)
        self.required = self.add_argument_group("required")
        self.options = self.add_argument_group("options")
        self.options.add_argument("-h", "--help", action="help", help="show this help and exit")
        self.checks: list[Callable[[argparse.Namespace], None]] = []

    def parse_args(self, args=None, namespace=None):
        parsed, unknown = self.parse_known_args(args, namespace)
        if unknown:
            flags = [s for action in self._actions for s in action.option_strings]
            close = {given: near for given in unknown if given.startswith("-") and (near := difflib.get_close_matches(
                given.split("=")[0], flags, n=2, cutoff=0.7))}
            hints = [" or ".join(near) + (f" for {given}" if len(close) > 1 else "") for given, near in close.items()]
            self.error(f"unrecognized arguments: {' '.join(unknown)}" + (f" (did you mean {'; '.join(hints)}?)"
                                                                        if hints else ""))
        for check in self.checks:
            check(parsed)
        return parsed

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (`{self.prog} --help` lists the flags)")


def parse_early(build: Callable[[], ArgumentParser]) -> None:
    """For a `python -m` module whose imports are heavy: answer --help, and refuse a bad command line (a missing
    folder included: the parser's `checks`) in one line (exit 2), before those imports run. `main` then parses the
    same command line again."""
    try:
        build().parse_args()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(USAGE_ERROR)


def counted(n: float, noun: str) -> str:
    """'1 image', '3 images', '0.5 epochs': a count and its noun, for any line a person reads."""
    return f"{n:g} {noun}{'' if n == 1 else 's'}"


def rank() -> int:
    """This process's rank under torchrun / accelerate launch (0 without a launcher)."""
    return int(os.environ.get("RANK", "0"))


def setup_logging() -> None:
    """Timestamped INFO lines on the main process; other processes only say errors, prefixed with their rank.
    Accelerate's line per checkpoint file and the Hub client's line per HTTP request are muted."""
    prefix = f"[rank {rank()}] " if rank() else ""
    logging.basicConfig(format=f"%(asctime)s %(levelname)s {prefix}%(message)s", datefmt="%H:%M:%S",
                        level=logging.ERROR if rank() else logging.INFO, force=True)
    # httpx2: huggingface_hub 2.4's HTTP client, one INFO line per request like httpx
    for chatty in ("accelerate.accelerator", "accelerate.checkpointing", "httpx", "httpx2", "httpcore", "timm"):
        logging.getLogger(chatty).setLevel(logging.WARNING)
    logging.getLogger("food101hf.preemption").setLevel(logging.WARNING)  # each process's stop, in a requeue's log


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
    and its `exit_status` (2; 3 for a diverged run, `errors.DivergedError`), no traceback; anything else is a bug
    and keeps its traceback.

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
            _leave(USAGE_ERROR)
        if not isinstance(error, UserError):
            raise
        if rank():
            time.sleep(GRACE_S)
        print(f"error: {f'[rank {rank()}] ' if rank() else ''}{error}", file=sys.stderr, flush=True)
        if connected:
            _leave(error.exit_status)
        sys.exit(error.exit_status)


def _leave(status: int) -> NoReturn:
    """Exit at once with `status`, without the interpreter's teardown: tearing down the process group waits for
    the other processes (seconds, or for ever if one is gone)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)

