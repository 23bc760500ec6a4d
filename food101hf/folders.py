"""How a folder of photos becomes a dataset: (split, class, file) rows under fixed rules, the same for train.py,
polish.py, ``food101hf.report`` (and ``--audit``) and ``food101hf.predict`` on folders.

    listing = list_folder("my_food")      # raises DatasetError for a layout that has two meanings
    listing.files["train"]["pizza"]       # [Path, ...], sorted
    listing.log(logger)                   # which folder is which split, and every file ignored, by reason
    load_folder("my_food")                # the listing as a datasets.DatasetDict (image, label), cached

The rules (docs/data.md states them for users):
- Split folders are the root's sub-folders named, case-insensitively, train/training, validation/val/valid/dev or
  test/testing. Two folders naming one split is an error naming both. With none of them, the root's sub-folders
  are the classes of the train split (a flat layout). File names never decide splits.
- A class is a top-level folder of a split; images in its sub-folders (dated folders, albums) belong to it. A file
  directly in a split folder, or in the root, is in no class: ignored and named. So is a folder beside the split
  folders.
- Hidden entries (names starting with '.', which covers macOS's AppleDouble '._x.jpg' and Jupyter's
  '.ipynb_checkpoints', and __MACOSX, Thumbs.db, desktop.ini) are skipped and never entered.
- An image is a file whose extension (any case) Pillow can open here: `images.image_extensions`, AVIF included,
  HEIC/HEIF through pillow-heif. Other files are ignored and named, never read as metadata.
- Class names are Unicode NFC: a folder named on macOS (NFD) and one named on Linux (NFC) are one class; two folders
  of one split with one NFC name are an error naming both.
- Symlinked folders and files are followed (a link back to an ancestor folder is not entered twice).
"""

from __future__ import annotations

import hashlib
import logging
import os
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .errors import DatasetError
from .images import image_extensions

logger = logging.getLogger(__name__)

SPLIT_FOLDERS = {"train": "train", "training": "train", "validation": "validation", "val": "validation",
                 "valid": "validation", "dev": "validation", "test": "test", "testing": "test"}
HIDDEN_NAMES = {"__macosx", "thumbs.db", "desktop.ini"}  # macOS zip archives, Windows Explorer's caches
NAMED = 5  # ignored files named per reason in a log line; the audit names them all

# why a file or folder is not in the dataset
HIDDEN, NOT_AN_IMAGE, NO_CLASS, NOT_A_SPLIT = ("hidden", "not an image", "not in a class folder",
                                               "not a split folder")
_DESCRIBE = {HIDDEN: ("hidden file or folder", "hidden files and folders"),
             NOT_AN_IMAGE: ("file that is not an image", "files that are not images"),
             NO_CLASS: ("file not in a class folder", "files not in a class folder"),
             NOT_A_SPLIT: ("folder beside the split folders", "folders beside the split folders")}


def ignored_line(reason: str, names: list[str]) -> str:
    """'ignored 7 files that are not images: a.csv, ... and 2 more': the first NAMED names, then a count."""
    more = f" and {len(names) - NAMED} more" if len(names) > NAMED else ""
    return f"ignored {len(names)} {_DESCRIBE[reason][len(names) > 1]}: {', '.join(names[:NAMED])}{more}"


def is_hidden(name: str) -> bool:
    return name.startswith(".") or name.lower() in HIDDEN_NAMES


def walk_files(folder: Path, ignored: dict[str, list[Path]] | None = None) -> list[Path]:
    """Every non-hidden file under `folder`, sorted, following symlinks; hidden entries go to ignored[HIDDEN]
    without being entered."""
    found, ancestors = [], {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in ancestors.get(os.path.dirname(dirpath), set()):  # a link back up: a loop
            dirnames[:] = []
            continue
        ancestors[dirpath] = ancestors.get(os.path.dirname(dirpath), set()) | {real}
        for name in sorted(dirnames + filenames):
            if is_hidden(name) and ignored is not None:
                ignored[HIDDEN].append(Path(dirpath, name))
        dirnames[:] = sorted(name for name in dirnames if not is_hidden(name))
        found += [Path(dirpath, name) for name in sorted(filenames) if not is_hidden(name)]
    return found


def image_files(folder: Path, ignored: dict[str, list[Path]] | None = None) -> list[Path]:
    """The images under `folder` by the rules above (predict's folder expansion); other files go to `ignored`."""
    extensions, images = image_extensions(), []
    for path in walk_files(folder, ignored):
        if path.suffix.lower() in extensions:
            images.append(path)
        elif ignored is not None:
            ignored[NOT_AN_IMAGE].append(path)
    return images


@dataclass
class FolderListing:
    """A folder as the rules read it: files[split][class] -> image paths; split_folders[split] -> the folder's
    name as written ('.' for a flat layout); nested[split] -> images in sub-folders of class folders; ignored
    [reason] -> paths, and ignored_in[(split, class)] -> reasons counted per class folder."""

    root: Path
    split_folders: dict[str, str] = field(default_factory=dict)
    files: dict[str, dict[str, list[Path]]] = field(default_factory=dict)
    nested: Counter = field(default_factory=Counter)
    ignored: dict[str, list[Path]] = field(default_factory=lambda: defaultdict(list))
    ignored_in: dict[tuple[str, str], Counter] = field(default_factory=lambda: defaultdict(Counter))

    @property
    def label_names(self) -> list[str]:
        return sorted({name for classes in self.files.values() for name in classes})

    def rows(self, split: str) -> tuple[list[str], list[str]]:
        """(file paths, class names) of one split, class by class."""
        pairs = [(str(path), name) for name, paths in sorted(self.files[split].items()) for path in paths]
        return [path for path, _ in pairs], [name for _, name in pairs]

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.root)) if path.is_relative_to(self.root) else str(path)

    def ignored_names(self) -> dict[str, list[str]]:
        return {reason: [self.relative(p) for p in paths] for reason, paths in self.ignored.items() if paths}

    def log(self, logger: logging.Logger) -> None:
        for split, folder in self.split_folders.items():
            images = sum(map(len, self.files[split].values()))
            where = "the root's class folders are" if folder == "." else f"{folder}/ is"
            logger.info("%s: %s the %s split (%d images in %d classes)", self.root, where, split, images,
                        len(self.files[split]))
            if self.nested[split]:
                logger.info("%d images in sub-folders of class folders in %s/ belong to those classes",
                            self.nested[split], folder)
        for reason, paths in self.ignored.items():
            # a hidden file in the root itself (.DS_Store, the demo's .complete marker) is never data: no line; the
            # audit lists it
            shown = [self.relative(p) for p in paths if not (reason == HIDDEN and p.parent == self.root
                                                             and p.is_file())]
            if shown:
                logger.info("%s", ignored_line(reason, shown))


def split_role(name: str) -> str | None:
    """The split ('train', 'validation' or 'test') a folder, or a Hub dataset's split, named `name` is, by
    SPLIT_FOLDERS in any case; None for any other name."""
    return SPLIT_FOLDERS.get(unicodedata.normalize("NFC", name).casefold())


def split_names() -> str:
    """'train/training, validation/val/valid/dev, test/testing': the names SPLIT_FOLDERS reads, split by split."""
    by_role: dict[str, list[str]] = defaultdict(list)
    for name, role in SPLIT_FOLDERS.items():
        by_role[role].append(name)
    return ", ".join("/".join(names) for names in by_role.values())


def _ignore_loose(listing: FolderListing, entry: Path) -> None:
    """An entry directly in the root or a split folder, outside any class folder."""
    if is_hidden(entry.name):
        listing.ignored[HIDDEN].append(entry)
    elif not entry.is_dir():
        listing.ignored[NO_CLASS if entry.suffix.lower() in image_extensions() else NOT_AN_IMAGE].append(entry)


def _split_folders(root: Path, listing: FolderListing) -> dict[str, Path]:
    found: dict[str, Path] = {}
    others = []
    for entry in sorted(root.iterdir()):
        split = split_role(entry.name) if entry.is_dir() and not is_hidden(entry.name) else None
        if split in found:
            raise DatasetError(f"{root}: {found[split].name}/ and {entry.name}/ are both the {split} split; keep "
                                 f"one (split folders: {split_names()}, in any case)")
        if split:
            found[split] = entry
        elif entry.is_dir() and not is_hidden(entry.name):
            others.append(entry)
        else:
            _ignore_loose(listing, entry)
    if not found:
        wrapped = [entry for entry in others if any(child.is_dir() and split_role(child.name)
                                                    for child in entry.iterdir())]
        if wrapped:  # e.g. a zip extracted into a folder of its own
            raise DatasetError(f"{root}: the split folders are inside {wrapped[0].name}/; pass that folder "
                                 f"({wrapped[0]})")
        return {"train": root}  # a flat layout: root/<class>/...
    listing.ignored[NOT_A_SPLIT] += others
    return found


def _add_class(listing: FolderListing, split: str, class_dir: Path, folder_of: dict[str, str]) -> None:
    name = unicodedata.normalize("NFC", class_dir.name)
    if name in folder_of:
        raise DatasetError(f"{listing.relative(class_dir.parent)}/: class folders {folder_of[name]!a} and "
                             f"{class_dir.name!a} are the same name {name!r} (Unicode NFC; one was probably "
                             f"written on a Mac): merge them")
    folder_of[name] = class_dir.name
    ignored: dict[str, list[Path]] = defaultdict(list)
    images = listing.files[split][name] = image_files(class_dir, ignored)
    listing.nested[split] += sum(path.parent != class_dir for path in images)
    for reason, paths in ignored.items():
        listing.ignored[reason] += paths
        listing.ignored_in[(split, name)][reason] += len(paths)


def list_folder(root: str | os.PathLike) -> FolderListing:
    """The (split, class, file) rows of a local folder, by the rules in this module's docstring. Raises
    DatasetError when the folder does not exist, when two folders name one split, when two class folders of a
    split have one NFC name, or when the split folders sit inside a single sub-folder. Class folders left without
    images are kept (empty) for the caller to judge."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {str(root)!r} does not exist")
    listing = FolderListing(root)
    for split, folder in _split_folders(root, listing).items():
        listing.split_folders[split] = "." if folder == root else folder.name
        listing.files[split] = {}
        folder_of: dict[str, str] = {}  # NFC class name -> its folder's name as written
        for entry in sorted(folder.iterdir()):
            if entry.is_dir() and not is_hidden(entry.name):
                _add_class(listing, split, entry, folder_of)
            elif folder != root:  # the root's own loose entries were sorted out with the split folders
                _ignore_loose(listing, entry)
    return listing


def check_trainable(listing: FolderListing) -> None:
    """Raise DatasetError for a listing that cannot give a classifier: no train split, a split without class
    folders, or a class folder left without images (saying what it held instead)."""
    root = listing.root
    if "train" not in listing.files:
        beside = [name + "/" for name in listing.ignored_names().get(NOT_A_SPLIT, [])]
        raise DatasetError(f"{root}: no train/ (or training/) folder beside "
                             f"{', '.join(f + '/' for f in listing.split_folders.values())}"
                             + (f"; ignored: {', '.join(beside)}" if beside else ""))
    for split, classes in listing.files.items():
        folder = root / listing.split_folders[split]
        if not classes:
            raise DatasetError(f"{folder} has no class folders; lay the dataset out as train/<class>/*.jpg")
        for name, files in classes.items():
            ignored = ", ".join(f"{n} {reason}" for reason, n in listing.ignored_in[(split, name)].items())
            if not files:
                raise DatasetError(f"{folder / name}/ has no images" + (f" (ignored there: {ignored})"
                                                                          if ignored else ""))


def _rows(files: list[str], labels: list[str]):
    yield from ({"image": file, "label": label} for file, label in zip(files, labels))


def load_folder(root: str | os.PathLike):
    """The folder's splits as a `datasets.DatasetDict` with `image` (paths, decoded on access) and `label` (one
    ClassLabel over every split's classes) columns; the listing is logged and checked (`check_trainable`). Each
    split is built by Dataset.from_generator under a fingerprint of its paths, classes, sizes and modification
    times, so a second run reuses the cache, and the bad-file check's, until a file changes."""
    from datasets import ClassLabel, Dataset, DatasetDict, Features
    from datasets import Image as ImageFeature

    listing = list_folder(root)
    listing.log(logger)
    check_trainable(listing)
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=listing.label_names)})
    splits = {}
    for split in listing.files:
        files, labels = listing.rows(split)
        fingerprint = hashlib.sha256(repr(features).encode())
        for file, label in zip(files, labels):
            stat = Path(file).stat()
            fingerprint.update(f"{file}\0{label}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        splits[split] = Dataset.from_generator(_rows, features=features, split=split,
                                               gen_kwargs={"files": files, "labels": labels},
                                               fingerprint=fingerprint.hexdigest()[:32])
    return DatasetDict(splits)


def _file_digest(example: dict) -> dict:
    image = example["image"]
    data = image["bytes"] if image["bytes"] is not None else Path(image["path"]).read_bytes()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def content_fingerprint(dataset, root: Path, split: str) -> str:
    """SHA-256 over each row of a local folder's split, in order: the image's path relative to `root` (NFC, '/'),
    its class, and its file's size and SHA-256. The file hashes are a `datasets` map, cached under the split's
    own fingerprint (absolute paths, modification times): a run at the same place reads nothing, a moved or
    re-staged folder is read once (~1 GB/s, beside the bad-file check's decode of every image). `dataset`: a
    `datasets.Dataset` of `load_folder`'s, or a subset of one."""
    from datasets import Image as ImageFeature  # here, as in load_folder: the folder rules load without datasets

    raw = dataset.cast_column("image", ImageFeature(decode=False))
    digests = raw.map(_file_digest, remove_columns=raw.column_names, desc=f"hashing {split} files")
    names = dataset.features["label"].names
    content = hashlib.sha256()
    for image, label, size, digest in zip(raw["image"], raw["label"], digests["size"], digests["sha256"]):
        path = unicodedata.normalize("NFC", Path(os.path.relpath(image["path"], root)).as_posix())
        content.update(f"{path}\0{names[label]}\0{size}\0{digest}\n".encode())
    return content.hexdigest()
