"""Every exception food101hf raises on purpose.

`UserError` is the one base class for "the user can fix this": a flag, a file, a dataset, a model reference, the
disk or the Hub. Each message says what was looked for where and what to do. The entry points
(`food101hf.cli.run`) print a UserError as one `error: ...` line with exit status 2; any other exception is a bug
and keeps its traceback, a ValueError from our code, numpy, torch or datasets included.

Each type also subclasses the builtin it was before this module existed (ValueError, RuntimeError,
FileNotFoundError), so `except ValueError` in a caller's code keeps working.
"""


class UserError(Exception):
    """A failure the user caused and can fix; its message says how. Printed in one line by `cli.run`, which then
    exits with `exit_status`."""

    exit_status = 2  # argparse's status for a bad command line


class UsageError(UserError, ValueError):
    """A command line or function argument that cannot work: the message names the flag or argument and says what
    would."""


class ConfigError(UsageError):
    """A preset or flag that does not fit the config dataclass, or a setting that cannot work."""


class DatasetError(UserError, ValueError):
    """A dataset that cannot be trained on or evaluated, with what to do about it."""


class ImageError(UserError, ValueError):
    """An input that could not be read as an image; the message names it."""


class CheckpointError(UserError, ValueError):
    """A checkpoint that cannot be written or resumed from, and why."""


class StorageError(UserError, ValueError):
    """A folder that cannot be written, or has no room; the message names it and what to do."""


class DivergedError(UserError, FloatingPointError):
    """Training met a non-finite loss, gradient norm or evaluation loss, or a model holds non-finite weights: the
    message names where, the last checkpoint with finite weights and what to try. Its own exit status, 3, because
    unlike most failures of status 2 (a bad flag, a full disk, the Hub unreachable) it comes back on every retry:
    `--resume auto` restarts from the same state, so a scheduler should not requeue it (docs/training.md)."""

    exit_status = 3


class HubError(UserError, RuntimeError):
    """The Hub could not be used; the message says what to do instead."""


class ModelNotFoundError(UserError, FileNotFoundError):
    """A model reference that is neither a folder written by train.py/polish.py nor a Hub repo that has one."""


class DemoFolderError(UserError, FileExistsError):
    """A folder asked to hold the demo dataset that holds something else; it is never overwritten."""
