"""What a dataset actually holds: image modes and sizes, duplicate images and unreadable files, per split.

Run it with ``python -m food101hf.report --audit --dataset D [--output-dir R]``. A local folder (or the demo) is
listed by `food101hf.folders`, the rules training uses, so the audit counts exactly the splits, classes and files
training would use, and names every file ignored, with the reason. Every image is put through training's bad-file
check (`images.check_image`: decoded to its end, a JPEG at 1/8, aspect ratio included); sizes are the stored ones,
from the header. A Hub dataset is read as training reads it (`food101hf.hub_dataset`: its config, the splits that
have a role, its image and label columns), with its image column undecoded, so the hash is over the bytes the Hub
serves. Duplicates are exact: identical bytes (SHA-256); a re-encoded or resized copy is not caught.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from datasets import Image as ImageFeature
from tqdm.auto import tqdm

from .data import load_dataset_dict
from .demo import default_demo_dir, make_demo
from .folders import NOT_AN_IMAGE, FolderListing, list_folder
from .hub_dataset import Layout
from .images import check_image

LISTED = 20  # duplicate groups and unreadable files named in audit.md; audit.json names them all


@dataclass
class Item:
    split: str
    label: str
    name: str  # the file within its split (or the row), for people to find it
    data: bytes | None  # None: the file could not even be read


def audit(items: Iterable[Item], other_files: dict[str, int] | None = None) -> dict:
    """Counts per split, and duplicate groups over all splits (within a split, across splits, across labels)."""
    splits: dict[str, dict] = defaultdict(lambda: {"images": 0, "unreadable": 0, "modes": Counter(),
                                                   "sizes": Counter(), "classes": Counter()})
    by_hash: dict[str, list[tuple[str, str, str]]] = defaultdict(list)  # hash -> (split, label, name); no bytes
    unreadable = []
    for item in items:
        stats = splits[item.split]
        stats["images"] += 1
        stats["classes"][item.label] += 1
        try:
            if item.data is None:
                raise OSError("cannot be read")
            mode, size = check_image(item.data)
        except Exception as e:  # noqa: BLE001 - any failure to decode is what we count; Pillow raises many kinds
            stats["unreadable"] += 1
            unreadable.append({"split": item.split, "file": item.name, "error": f"{type(e).__name__}: {e}"})
        else:
            stats["modes"][mode] += 1
            stats["sizes"][size] += 1
        if item.data is not None:
            by_hash[hashlib.sha256(item.data).hexdigest()].append((item.split, item.label, item.name))

    groups = [group for group in by_hash.values() if len(group) > 1]
    result = {"splits": {}}
    for name, stats in sorted(splits.items()):
        sizes, classes = stats["sizes"], stats["classes"]
        in_split = [sum(split == name for split, _, _ in group) for group in groups]
        result["splits"][name] = {
            "images": stats["images"], "unreadable": stats["unreadable"],
            "other_files": (other_files or {}).get(name, 0),
            "classes": len(classes), "images_per_class": [min(classes.values()), max(classes.values())],
            "modes": dict(stats["modes"].most_common()),
            "most_common_sizes": {f"{w}x{h}": n for (w, h), n in sizes.most_common(10)},
            "distinct_sizes": len(sizes),
            "longer_side": [min(map(max, sizes), default=None), max(map(max, sizes), default=None)],
            "shorter_side": [min(map(min, sizes), default=None), max(map(min, sizes), default=None)],
            "duplicates": sum(n - 1 for n in in_split if n > 1),  # copies beyond the first, within the split
        }
    result["duplicate_groups"] = len(groups)
    result["duplicates_across_splits"] = sum(len({split for split, _, _ in group}) > 1 for group in groups)
    result["duplicates_across_labels"] = sum(len({label for _, label, _ in group}) > 1 for group in groups)
    result["duplicate_files"] = [[f"{split}/{name}" for split, _, name in group] for group in groups]
    result["unreadable_files"] = unreadable
    return result


def folder_items(listing: FolderListing, other_files: Counter) -> Iterator[Item]:
    """Every (split, class, file) row of the listing, with its bytes; counts per split, in `other_files`, the files
    in the split's folder that are not images."""
    for split, classes in listing.files.items():
        split_folder = listing.root / listing.split_folders[split]
        other_files[split] = sum(path.is_relative_to(split_folder) for path in listing.ignored[NOT_AN_IMAGE])
        for label, paths in classes.items():
            for path in paths:
                try:
                    data = path.read_bytes()
                except OSError:
                    data = None
                yield Item(split, label, str(path.relative_to(split_folder)), data)


def hub_items(splits, layout: Layout) -> Iterator[Item]:
    """Every row of a DatasetDict read by `hub_dataset` (`image` and `label` columns, keyed by role), with its
    image undecoded (bytes as served, or the cached file), under the dataset's own split names; a withheld or
    out-of-range label is shown as such."""
    for role, dataset in splits.items():
        names = dataset.features["label"].names
        dataset = dataset.cast_column("image", ImageFeature(decode=False))
        for row, example in enumerate(dataset):
            image, data, label = example["image"], example["image"]["bytes"], example["label"]
            if data is None and image["path"]:
                try:
                    data = Path(image["path"]).read_bytes()
                except OSError:
                    pass  # counted as unreadable
            name = names[label] if label is not None and 0 <= label < len(names) else f"(no class: {label})"
            yield Item(layout.splits[role], name, image["path"] or f"row {row}", data)


def audit_dataset(cfg) -> dict:
    """Audit cfg.dataset (a local folder, 'demo', or a Hub id) with a progress bar."""
    root = Path(cfg.dataset).expanduser()
    if cfg.dataset == "demo":
        root = make_demo(default_demo_dir())
    other_files: Counter = Counter()
    listing = None
    if root.is_dir():
        listing = list_folder(root)
        items = folder_items(listing, other_files)
    else:
        items = hub_items(*load_dataset_dict(cfg))
    result = audit(tqdm(items, desc="audit", unit="img"), other_files)
    if listing is None:
        return {"dataset": cfg.dataset} | result
    return {"dataset": cfg.dataset, "split_folders": listing.split_folders} | result | {
        "nested_images": {split: listing.nested[split] for split in listing.files},
        "empty_classes": [f"{split}/{name}" for split, classes in listing.files.items()
                          for name, files in classes.items() if not files],
        "ignored": listing.ignored_names()}


def audit_markdown(result: dict) -> str:
    """The audit as a table, one column per split, then the duplicates and unreadable files found."""
    splits = result["splits"]
    rows = [("image files", lambda s: s["images"]), ("bad files (training skips them)", lambda s: s["unreadable"]),
            ("other files (not images: ignored)", lambda s: s["other_files"]),
            ("classes", lambda s: s["classes"]), ("images per class (min–max)", lambda s: "–".join(
                map(str, s["images_per_class"]))),
            ("modes", lambda s: ", ".join(f"{m} {n}" for m, n in s["modes"].items())),
            ("distinct sizes", lambda s: s["distinct_sizes"]),
            ("most common size", lambda s: next((f"{k} ({n})" for k, n in s["most_common_sizes"].items()), "–")),
            ("longer side (min–max px)", lambda s: "–".join(map(str, s["longer_side"]))),
            ("shorter side (min–max px)", lambda s: "–".join(map(str, s["shorter_side"]))),
            ("duplicate copies within the split", lambda s: s["duplicates"])]
    lines = [f"# Audit of {result['dataset']}", ""]
    if "split_folders" in result:  # a local folder: which folder is which split
        lines += ["Split folders: " + ", ".join(f"{split} = {'the root' if folder == '.' else folder + '/'}"
                                                for split, folder in result["split_folders"].items()) + "", ""]
    lines += ["| | " + " | ".join(splits) + " |", "|---" * (len(splits) + 1) + "|"]
    lines += [f"| {name} | " + " | ".join(str(get(s)) for s in splits.values()) + " |" for name, get in rows]
    lines += ["", f"Identical files (SHA-256 of the bytes): {result['duplicate_groups']} groups, "
              f"{result['duplicates_across_splits']} spanning splits, {result['duplicates_across_labels']} "
              f"with different labels."]
    lines += [f"- {', '.join(group)}" for group in result["duplicate_files"][:LISTED]]
    if result["unreadable_files"]:
        lines += ["", f"Bad files ({len(result['unreadable_files'])}), which training names and skips:"]
        lines += [f"- {u['split']}/{u['file']}: {u['error']}" for u in result["unreadable_files"][:LISTED]]
    for name in result.get("empty_classes", []):
        lines += ["", f"Class folder {name}/ has no images: training stops on it."]
    for reason, names in result.get("ignored", {}).items():
        lines += ["", f"Ignored, {reason} ({len(names)}):"] + [f"- {name}" for name in names[:LISTED]]
    if max(len(result["duplicate_files"]), len(result["unreadable_files"]),
           *map(len, result.get("ignored", {}).values())) > LISTED:
        lines += ["", f"(the first {LISTED} of each; audit.json lists them all)"]
    return "\n".join(lines) + "\n"


def write_audit(result: dict, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(result, indent=2, ensure_ascii=False, allow_nan=False)
    (out_dir / "audit.json").write_text(text + "\n", encoding="utf-8")
    (out_dir / "audit.md").write_text(audit_markdown(result), encoding="utf-8")
