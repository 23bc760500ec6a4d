"""Reaching the Hugging Face Hub: is it there, what is a Hub repo id and what a local path, and the clients'
network errors as one actionable line. huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE (at import); the token
is its own (HF_TOKEN or `hf auth login`), never ours.

`looks_like_path`, `is_repo_id` and `no_such_path` are used while flags are parsed, so that a mistyped folder is
said not to exist before anything loads, and huggingface_hub (~0.5 s of imports, httpx with it) is imported inside
the functions that reach the Hub, never on the way to --help."""

from __future__ import annotations

import contextlib
import difflib
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import HubError

# The Hub's rule for a namespace and a repo name: letters, digits, '-', '_', '.', not starting with '-' or '.'
PLACEHOLDER = "YOUR_NAME"  # the user name in the push commands we print, for the user to replace
_REPO_ID = re.compile(r"\w[\w.-]*/\w[\w.-]*")


def has_repo_id_form(text: str) -> bool:
    """Whether `text` is spelled as a Hub repo id, `org/name` or `org/name@revision` (a push or Space target)."""
    repo_id, at, revision = text.partition("@")
    return bool(_REPO_ID.fullmatch(repo_id)) and (not at or bool(revision))


def looks_like_path(ref: str | Path) -> bool:
    """Whether `ref` can only mean a local path: it starts with '.', '~' or '/', has a backslash or another number
    of '/' than org/name's one, or its parent is a folder here (`outputs/nope` when outputs/ exists; a bare name
    `my_food`, whose parent is the working directory). Such a ref that does not exist is a missing folder, never
    a Hub repo to look for."""
    text = str(ref)
    return (text.startswith((".", "~", "/")) or "\\" in text or text.count("/") != 1
            or Path(text.partition("@")[0]).expanduser().parent.is_dir())


def is_repo_id(ref: str | Path) -> bool:
    """Whether `ref` refers to a Hub repo, `org/name` or `org/name@revision`: spelled as one and not a local path
    (`looks_like_path`; a folder `org/name` in the working directory is the folder)."""
    return has_repo_id_form(str(ref)) and not looks_like_path(ref)


def no_such_path(ref: str | Path, kind: str = "folder") -> str:
    """'REF: no such folder (in CWD); did you mean REF2?' for a `ref` that is not a `kind` here, with the names in
    its parent folder closest to it; 'REF: a file, not a folder' when it is a file."""
    path = Path(ref).expanduser()
    if kind == "folder" and path.is_file():
        return f"{ref}: a file, not a folder"
    where = "" if path.is_absolute() else f" (in {Path.cwd()})"
    try:
        siblings = [entry.name for entry in path.parent.iterdir()]
    except OSError:  # the parent is missing too, or unreadable
        siblings = []
    text = str(ref).rstrip("/\\")
    prefix = text[:len(text) - len(path.name)]  # as the user typed it: './my_fod' -> './my_food'
    near = [prefix + name for name in difflib.get_close_matches(path.name, siblings, n=2, cutoff=0.6)]
    return f"{ref}: no such {kind}{where}" + (f"; did you mean {' or '.join(near)}?" if near else "")


def missing_folder(ref: str | Path) -> str | None:
    """`no_such_path(ref)` when `ref` can only be a local folder (`looks_like_path`) and is not one, else None."""
    return no_such_path(ref) if looks_like_path(ref) and not Path(ref).expanduser().is_dir() else None


def require_hub(what: str, hint: str, download: bool = True) -> None:
    """Fail in seconds when the Hub is unreachable, instead of after a minute of client retries. Raises HubError
    naming `what` was wanted, with `hint` (what to do instead); for a `download`, which a cached copy can serve,
    it also names HF_HUB_OFFLINE=1 (not for an upload: nothing offline can push)."""
    from huggingface_hub import constants  # here: see the module docstring

    if constants.HF_HUB_OFFLINE:
        return  # cached files only: the libraries raise at once if what we need is not cached
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=5).close()
    except OSError as e:
        advice = (f"If it is already in your cache, rerun with HF_HUB_OFFLINE=1; otherwise {hint}" if download else
                  f"Check your network connection (and HF_ENDPOINT, if you set it); {hint}")
        raise HubError(f"cannot reach the Hub at {constants.ENDPOINT} for {what} ({e}). {advice}.") from None


@contextlib.contextmanager
def hub_errors(what: str, hint: str):
    """Check the Hub is reachable, then turn the clients' network errors into one actionable HubError."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled  # here: see the docstring

    require_hub(what, hint)
    try:
        yield
    except (OfflineModeIsEnabled, LocalEntryNotFoundError, ConnectionError) as e:
        raise HubError(f"{what} is not in the local cache and the Hub cannot be used ({e}); {hint}.") from None
