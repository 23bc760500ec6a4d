"""Reaching the Hugging Face Hub: is it there, what a Hub repo id looks like, and the clients' network errors as
one actionable line. huggingface_hub reads HF_ENDPOINT and HF_HUB_OFFLINE (at import); the token is its own
(HF_TOKEN or `hf auth login`), never ours.

`is_repo_id` is used while flags are parsed, so huggingface_hub (~0.5 s of imports, httpx with it) is imported
inside the functions that reach the Hub, never on the way to --help."""

from __future__ import annotations

import contextlib
import re
import socket
from pathlib import Path
from urllib.parse import urlparse

from .errors import HubError

# The Hub's rule for a namespace and a repo name: letters, digits, '-', '_', '.', not starting with '-' or '.'
_REPO_ID = re.compile(r"\w[\w.-]*/\w[\w.-]*")


def is_repo_id(ref: str | Path) -> bool:
    """Whether `ref` has the form of a Hub repo id, `org/name` or `org/name@revision`, and is not a local path that
    exists (a folder `org/name` in the working directory is the folder)."""
    repo_id, at, revision = str(ref).partition("@")
    return bool(_REPO_ID.fullmatch(repo_id)) and (not at or bool(revision)) and not Path(ref).expanduser().exists()


def require_hub(what: str, hint: str) -> None:
    """Fail in seconds when the Hub is unreachable, instead of after a minute of client retries. Raises HubError
    naming `what` was wanted, with `hint` (what to do instead)."""
    from huggingface_hub import constants  # here: see the module docstring

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
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled  # here: see the docstring

    require_hub(what, hint)
    try:
        yield
    except (OfflineModeIsEnabled, LocalEntryNotFoundError, ConnectionError) as e:
        raise HubError(f"{what} is not in the local cache and the Hub cannot be used ({e}); {hint}.") from None
