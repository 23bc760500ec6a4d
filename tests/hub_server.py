"""A small stand-in for the Hugging Face Hub on 127.0.0.1, so that pushes and pulls run offline through the real
huggingface_hub client (point it here with HF_ENDPOINT; disable Xet with HF_HUB_DISABLE_XET=1).

It serves the calls huggingface_hub 2.x makes for
- a push: create_repo, create_branch, README metadata validation, preupload (regular or LFS), the LFS batch API and
  the single-part LFS upload it hands out, and the ndjson commit;
- a pull: repo info (at a revision), the file tree, paths-info, and HEAD/GET on resolve URLs with the ETag and
  X-Repo-Commit headers the download cache keys on.
Model repos are keyed `org/name`, Space and dataset repos `spaces/org/name` and `datasets/org/name` (the same
calls under /api/spaces/..., /spaces/.../resolve/...; for a dataset, what `datasets.load_dataset("org/name")`
calls: the README.md dataset card, repo info, the tree of data files, then each parquet shard). A missing repo
answers 404 with X-Error-Code RepoNotFound, as the Hub does. Seed repos as if pushed with `add_repo`.
It keeps every commit of every repo in memory and serves back exactly what was pushed. Write calls must carry
`Authorization: Bearer <token>`; private repos are invisible without it.

    with HubServer(token="hf_fake") as hub:   # hub.url -> "http://127.0.0.1:PORT"
        hub.add_repo("ethz/food101", {"README.md": card, "data/train-00000-of-00001.parquet": shard}, "dataset")
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import json
import re
import threading
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import yaml

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".pkl")  # the Hub's default .gitattributes
GITATTRIBUTES = b"".join(b"*%s filter=lfs diff=lfs merge=lfs -text\n" % s.encode() for s in LFS_SUFFIXES)


def git_oid(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


@dataclass
class File:
    content: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.content).hexdigest()


@dataclass
class Repo:
    private: bool
    branches: dict[str, str] = field(default_factory=dict)  # branch -> commit
    commits: dict[str, dict[str, File]] = field(default_factory=dict)  # commit -> the full tree at that commit


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None):
        super().__init__(message)
        self.status, self.code = status, code


class HubServer:
    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.lfs_store: dict[str, bytes] = {}  # sha256 -> content
        self.lfs_expected: set[str] = set()  # oids an authorised batch call announced, not yet uploaded
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, carried the token)
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> HubServer:
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def add_repo(self, repo_id: str, files: dict[str, bytes], repo_type: str = "model") -> None:
        """A public repo holding `files` on main (repo_type "model" or "dataset"), as if someone had pushed them."""
        key = repo_id if repo_type == "model" else f"{repo_type}s/{repo_id}"
        repo = self.repos[key] = Repo(private=False)
        tree = {".gitattributes": File(GITATTRIBUTES + b"*.parquet filter=lfs diff=lfs merge=lfs -text\n", lfs=False)}
        tree |= {path: File(content, lfs=path.endswith((*LFS_SUFFIXES, ".parquet")))
                 for path, content in files.items()}
        self._new_commit(repo, "main", tree, "initial commit")

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """What a repo holds at a branch or commit, for assertions."""
        repo = self.repos[repo_id]
        return {path: f.content for path, f in repo.commits[repo.branches.get(revision, revision)].items()}

    # --- helpers -------------------------------------------------------------------------------------------------

    def _repo(self, repo_id: str, authorised: bool) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None or (repo.private and not authorised):
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    @staticmethod
    def _commit(repo: Repo, revision: str) -> str:
        if revision in repo.branches:
            return repo.branches[revision]
        if revision in repo.commits:
            return revision
        raise HubError(404, f"Revision {revision} not found", "RevisionNotFound")

    @staticmethod
    def _new_commit(repo: Repo, branch: str, tree: dict[str, File], summary: str) -> str:
        parent = repo.branches.get(branch, "")
        listing = "".join(f"{path} {git_oid(f.content)}\n" for path, f in sorted(tree.items()))
        sha = hashlib.sha1(f"{parent}\n{summary}\n{len(repo.commits)}\n{listing}".encode()).hexdigest()
        repo.commits[sha], repo.branches[branch] = tree, sha
        return sha

    def _entry(self, path: str, f: File) -> dict:
        entry = {"type": "file", "path": path, "size": len(f.content), "oid": git_oid(f.content)}
        if f.lfs:
            entry["lfs"] = {"oid": f.sha256, "size": len(f.content), "pointerSize": 134}
        return entry

    # --- write calls (token required) ----------------------------------------------------------------------------

    def create_repo(self, body: dict) -> tuple[int, dict]:
        if not body.get("organization"):
            raise HubError(400, "this test server only knows org/name repos")
        kind = {"model": "", "space": "spaces/", "dataset": "datasets/"}[body.get("type") or "model"]
        repo_id = f"{kind}{body['organization']}/{body['name']}"
        if repo_id in self.repos:
            return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
        repo = self.repos[repo_id] = Repo(private=body.get("visibility") == "private" or bool(body.get("private")))
        self._new_commit(repo, "main", {".gitattributes": File(GITATTRIBUTES, lfs=False)}, "initial commit")
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id}

    def create_branch(self, repo_id: str, branch: str, body: dict) -> tuple[int, dict]:
        repo = self._repo(repo_id, authorised=True)
        if branch in repo.branches:
            return 409, {"error": f"Reference refs/heads/{branch} already exists"}
        repo.branches[branch] = self._commit(repo, body.get("startingPoint") or "main")
        return 200, {}

    def preupload(self, repo_id: str, revision: str, body: dict) -> tuple[int, dict]:
        repo = self._repo(repo_id, authorised=True)
        tree = repo.commits[self._commit(repo, revision)]
        files = []
        for f in body["files"]:
            lfs = f["path"].endswith(LFS_SUFFIXES) or f["size"] >= 10 * 2**20
            remote = tree.get(f["path"])
            oid = None if remote is None else (remote.sha256 if remote.lfs else git_oid(remote.content))
            files.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                          "oid": oid})
        return 200, {"files": files}

    def lfs_batch(self, repo_id: str, body: dict) -> tuple[int, dict]:
        self._repo(repo_id, authorised=True)
        objects = []
        for obj in body["objects"]:
            if obj["oid"] in self.lfs_store:
                objects.append({"oid": obj["oid"], "size": obj["size"]})  # already stored: nothing to send
            else:
                self.lfs_expected.add(obj["oid"])
                objects.append({"oid": obj["oid"], "size": obj["size"],
                                "actions": {"upload": {"href": f"{self.url}/lfs-upload/{obj['oid']}"}}})
        return 200, {"transfer": "basic", "objects": objects}

    def lfs_upload(self, oid: str, content: bytes) -> tuple[int, dict]:
        # like a presigned storage URL: no token, but only for an object an authorised batch call announced
        if oid not in self.lfs_expected:
            raise HubError(403, f"no upload was requested for {oid}")
        if hashlib.sha256(content).hexdigest() != oid:
            raise HubError(400, f"content does not match sha256 {oid}")
        self.lfs_store[oid] = content
        self.lfs_expected.discard(oid)
        return 200, {}

    def commit(self, repo_id: str, revision: str, lines: list[dict]) -> tuple[int, dict]:
        repo = self._repo(repo_id, authorised=True)
        if revision not in repo.branches:
            raise HubError(404, f"Branch {revision} not found", "RevisionNotFound")
        tree = dict(repo.commits[repo.branches[revision]])
        summary = ""
        for line in lines:
            key, value = line["key"], line["value"]
            if key == "header":
                summary = value["summary"]
            elif key == "file":
                tree[value["path"]] = File(base64.b64decode(value["content"]), lfs=False)
            elif key == "lfsFile":
                if value["oid"] not in self.lfs_store:
                    raise HubError(400, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                tree[value["path"]] = File(self.lfs_store[value["oid"]], lfs=True)
            elif key == "deletedFile":
                if tree.pop(value["path"], None) is None:
                    raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
            elif key == "deletedFolder":
                tree = {p: f for p, f in tree.items() if not p.startswith(value["path"].rstrip("/") + "/")}
            else:
                raise HubError(400, f"unknown commit operation {key!r}")
        sha = self._new_commit(repo, revision, tree, summary)
        return 200, {"success": True, "commitOid": sha, "commitUrl": f"{self.url}/{repo_id}/commit/{sha}",
                     "commitMessage": summary}

    # --- read calls ----------------------------------------------------------------------------------------------

    def repo_info(self, repo_id: str, revision: str, authorised: bool) -> tuple[int, dict]:
        repo = self._repo(repo_id, authorised)
        sha = self._commit(repo, revision)
        name = repo_id.removeprefix("spaces/").removeprefix("datasets/")
        return 200, {"id": name, "modelId": name, "sha": sha, "private": repo.private,
                     "siblings": [{"rfilename": path} for path in sorted(repo.commits[sha])]}

    def paths_info(self, repo_id: str, revision: str, paths: list[str], authorised: bool) -> tuple[int, list]:
        repo = self._repo(repo_id, authorised)
        tree = repo.commits[self._commit(repo, revision)]
        found = []
        for path in paths:
            path = path.strip("/")
            if path in tree:
                found.append(self._entry(path, tree[path]))
            elif any(p.startswith(path + "/") for p in tree):
                found.append({"type": "directory", "path": path, "oid": git_oid(path.encode())})
        return 200, found

    def tree(self, repo_id: str, revision: str, path: str, recursive: bool, authorised: bool) -> tuple[int, list]:
        repo = self._repo(repo_id, authorised)
        tree = repo.commits[self._commit(repo, revision)]
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        entries, folders = [], set()
        for file_path, f in sorted(tree.items()):
            if not file_path.startswith(prefix):
                continue
            rest = file_path[len(prefix):]
            if recursive or "/" not in rest:
                entries.append(self._entry(file_path, f))
            else:
                folders.add(prefix + rest.split("/")[0])
        entries += [{"type": "directory", "path": p, "oid": git_oid(p.encode())} for p in sorted(folders)]
        return 200, entries

    def resolve(self, repo_id: str, revision: str, path: str, authorised: bool) -> tuple[dict, bytes]:
        repo = self._repo(repo_id, authorised)
        sha = self._commit(repo, revision)
        f = repo.commits[sha].get(path)
        if f is None:
            raise HubError(404, f"Entry {path} not found", "EntryNotFound")
        headers = {"X-Repo-Commit": sha, "ETag": f'"{git_oid(f.content)}"', "Content-Type": "application/octet-stream"}
        if f.lfs:  # the Hub keys LFS files by their sha256
            headers |= {"X-Linked-Etag": f'"{f.sha256}"', "X-Linked-Size": str(len(f.content))}
        return headers, f.content


def validate_card(content: str) -> tuple[int, dict]:
    """Like the Hub: README metadata must be a YAML mapping."""
    match = re.match(r"^---\n(.*?)\n---\n", content, re.S)
    try:
        metadata = yaml.safe_load(match.group(1)) if match else {}
    except yaml.YAMLError as e:
        return 400, {"errors": [{"message": f"invalid YAML: {e}"}], "warnings": []}
    if not isinstance(metadata, dict):
        return 400, {"errors": [{"message": "metadata must be a mapping"}], "warnings": []}
    return 200, {"errors": [], "warnings": []}


REPO = r"(?P<repo>[^/]+/[^/]+)"
KIND = r"(?P<kind>models|spaces|datasets)"  # in /api/<kind>/...; resolve and LFS URLs have /spaces|/datasets or none


def _key(m: re.Match) -> str:
    """The repos dict's key of a matched URL: `org/name` for a model, `spaces/org/name` for a Space."""
    return m["repo"] if m["kind"] in (None, "models") else f"{m['kind']}/{m['repo']}"


def _handler_class(hub: HubServer):
    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):  # keep pytest output clean
            pass

        def _authorised(self) -> bool:
            return self.headers.get("Authorization") == f"Bearer {hub.token}"

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while size := int(self.rfile.readline().strip(), 16):
                    chunks.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()
                return b"".join(chunks)
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def _send(self, status: int, payload=None, headers: dict | None = None, body: bytes | None = None):
            if body is None:
                body = json.dumps(payload if payload is not None else {}).encode()
                headers = {"Content-Type": "application/json", **(headers or {})}
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _dispatch(self):
            url = urlsplit(self.path)
            path, query = url.path, dict(p.split("=", 1) for p in url.query.split("&") if "=" in p)
            authorised = self._authorised()
            hub.requests.append((self.command, path, authorised))
            try:
                with hub._lock:
                    self._route(path, query, authorised)
            except HubError as e:
                headers = {"X-Error-Message": str(e)} | ({"X-Error-Code": e.code} if e.code else {})
                self._send(e.status, {"error": str(e)}, headers)

        def _route(self, path: str, query: dict, authorised: bool):
            method = self.command
            if method in ("HEAD", "GET") and (m := re.fullmatch(
                    rf"(/(?P<kind>spaces|datasets))?/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", path)):
                headers, content = hub.resolve(_key(m), unquote(m["rev"]), unquote(m["file"]), authorised)
                return self._send(200, headers=headers, body=content)
            if method == "GET" and (m := re.fullmatch(rf"/api/{KIND}/{REPO}(/revision/(?P<rev>[^/]+))?", path)):
                return self._send(*hub.repo_info(_key(m), unquote(m["rev"] or "main"), authorised))
            if method == "GET" and (m := re.fullmatch(rf"/api/{KIND}/{REPO}/tree/(?P<rev>[^/]+)(?P<p>/.*)?", path)):
                recursive = query.get("recursive", "").lower() == "true"
                return self._send(*hub.tree(_key(m), unquote(m["rev"]), unquote(m["p"] or ""), recursive,
                                            authorised))
            if method == "POST" and (m := re.fullmatch(rf"/api/{KIND}/{REPO}/paths-info/(?P<rev>[^/]+)", path)):
                body = self._body()
                paths = (json.loads(body)["paths"] if body.lstrip().startswith(b"{") else
                         [unquote(v) for k, v in (p.split("=", 1) for p in body.decode().split("&")) if k == "paths"])
                return self._send(*hub.paths_info(_key(m), unquote(m["rev"]), paths, authorised))
            if method == "POST" and path == "/api/validate-yaml":
                return self._send(*validate_card(json.loads(self._body())["content"]))
            if method == "PUT" and (m := re.fullmatch(r"/lfs-upload/(?P<oid>[0-9a-f]{64})", path)):
                return self._send(*hub.lfs_upload(m["oid"], self._body()))
            if method != "POST":
                raise HubError(404, f"no route for {method} {path}")
            # every other call writes: the Hub wants a token with write access
            if not authorised:
                raise HubError(401, "Invalid credentials in Authorization header")
            body = self._body()
            if path == "/api/repos/create":
                return self._send(*hub.create_repo(json.loads(body)))
            if m := re.fullmatch(rf"/api/{KIND}/{REPO}/branch/(?P<branch>[^/]+)", path):
                return self._send(*hub.create_branch(_key(m), unquote(m["branch"]), json.loads(body or b"{}")))
            if m := re.fullmatch(rf"/api/{KIND}/{REPO}/preupload/(?P<rev>[^/]+)", path):
                return self._send(*hub.preupload(_key(m), unquote(m["rev"]), json.loads(body)))
            if m := re.fullmatch(rf"(/(?P<kind>spaces|datasets))?/{REPO}\.git/info/lfs/objects/batch", path):
                return self._send(*hub.lfs_batch(_key(m), json.loads(body)))
            if m := re.fullmatch(rf"/api/{KIND}/{REPO}/commit/(?P<rev>[^/]+)", path):
                lines = [json.loads(line) for line in body.splitlines() if line.strip()]
                return self._send(*hub.commit(_key(m), unquote(m["rev"]), lines))
            raise HubError(404, f"no route for {method} {path}")

        do_GET = do_HEAD = do_POST = do_PUT = _dispatch

    return Handler
