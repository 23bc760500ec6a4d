"""A Gradio web demo of a trained model: upload, paste or take a photo, see the top-5 dishes with their confidence.

    python -m food101hf.app --model outputs/demo                  # a folder written by train.py or polish.py
    python -m food101hf.app --model org/name [--share] [--server-port 7860] [--server-name 0.0.0.0]

The page shows the model's reported results (metrics.json: top-1/top-5, split, resolution) and its dataset, and
example photos when that dataset is on this machine (the generated demo, or the local folder it was trained on).
A file that is not a readable image gets a message in the page, not a stack trace. A Hub Space runs the same app
(`python -m food101hf.hub space`).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from pathlib import Path

import gradio as gr
import yaml

from .card import dataset_kind, dataset_name
from .folders import image_files, is_hidden
from .model import trained_folder
from .predict import ImageError, Predictor

MAX_UPLOAD = "20mb"  # Gradio refuses larger uploads in the page; a phone photo is 2-8 MB
EXAMPLES_PER_PAGE = 10


def model_summary(folder: Path) -> str:
    """The panel under the title: reported top-1/top-5 with split and resolution, and the dataset."""
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
    recipe_file = folder / "train_config.yaml"
    dataset = yaml.safe_load(recipe_file.read_text()).get("dataset") if recipe_file.is_file() else None
    lines = []
    if metrics:
        lines.append(f"**Reported:** top-1 {metrics['top1']:.1%}, top-5 {metrics['top5']:.1%} on "
                     f"{metrics['num_eval_samples']} {metrics.get('eval_split', 'validation')} images at "
                     f"{metrics['image_size']} px.")
    if dataset is not None:
        kind = dataset_kind(dataset)
        about = {"demo": "food101hf's generated demo: synthetic drawings, so it will not recognise real photos",
                 "hub": "a Hub dataset", "local": "a local image folder"}[kind]
        lines.append(f"**Dataset:** `{dataset_name(dataset)}` ({about}).")
    return "\n\n".join(lines) or "No reported results for this model (no metrics.json)."


def example_images(folder: Path, limit: int = EXAMPLES_PER_PAGE) -> list[str]:
    """One image per class (up to `limit` classes) of the model's validation split, when its dataset is here: the
    generated demo, or the local folder recorded in train_config.yaml. Empty for a Hub dataset."""
    recipe_file = folder / "train_config.yaml"
    if not recipe_file.is_file():
        return []
    dataset = yaml.safe_load(recipe_file.read_text()).get("dataset")
    if dataset_kind(dataset) == "hub":
        return []
    if dataset == "demo":
        from .demo import default_demo_dir

        root = default_demo_dir()
    else:
        root = Path(dataset["path"] if isinstance(dataset, dict) else dataset).expanduser()
    split = next((root / s for s in ("validation", "test", "train") if (root / s).is_dir()), None)
    if split is None:
        return []
    classes = sorted(p for p in split.iterdir() if p.is_dir() and not is_hidden(p.name))[:limit]
    found = (next(iter(image_files(c)), None) for c in classes)  # training's rules: no hidden files, HEIC too
    return [str(f) for f in found if f is not None]


def classify(predictor: Predictor, upload: dict | None) -> tuple[dict | None, str]:
    """(top-5 {label: score} for gr.Label, message) for an upload as Gradio sends it undecoded (its FileData:
    `path`, `orig_name`); an unreadable file gets (None, a message naming it and why)."""
    if not upload:
        return None, ""
    try:
        return predictor.label_scores(upload["path"], top_k=5), ""
    except ImageError as e:  # named by the file's own name, not Gradio's temporary path
        problem = str(e).replace(upload["path"], upload.get("orig_name") or Path(upload["path"]).name)
        return None, f"⚠️ {problem}. Please upload a photo (JPEG, PNG, WebP, ...)."


def build_demo(model: str | Path, examples: list[str] | None = None, predictor: Predictor | None = None) -> gr.Blocks:
    """The page for `model` (a folder or a Hub repo id). `examples`: image paths to offer; by default those of
    `example_images`."""
    folder = trained_folder(model)
    predictor = predictor or Predictor(folder)
    examples = example_images(folder) if examples is None else examples

    with gr.Blocks(title=f"food101hf: {Path(str(model)).name}") as demo:
        gr.Markdown(f"# What dish is this?\nModel `{model}`: {len(predictor.labels)} classes, served at "
                    f"{predictor.data_config['input_size'][-1]} px.\n\n{model_summary(folder)}")
        with gr.Row():
            image = gr.Image(label="Photo", type="filepath", sources=["upload", "clipboard", "webcam"])
            with gr.Column():
                label = gr.Label(label="Top 5", num_top_classes=5)
                message = gr.Markdown(elem_id="message")
        # preprocess=False: the upload reaches `classify` undecoded, so an unreadable file gets our message
        # (ImageError says what is wrong) instead of Gradio's generic "Error"
        image.change(functools.partial(classify, predictor), image, [label, message], preprocess=False,
                     api_name="classify")
        if examples:
            gr.Examples(examples, image, label="Examples from the model's validation split")
    return demo


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m food101hf.app", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="folder written by train.py/polish.py, or Hub repo id")
    parser.add_argument("--examples", help="folder of example images to offer (default: from the model's dataset)")
    parser.add_argument("--share", action="store_true", help="also serve on a public gradio.live link")
    parser.add_argument("--server-name", help="address to listen on (default 127.0.0.1; 0.0.0.0 for all)")
    parser.add_argument("--server-port", type=int, help="port (default 7860, or the next free one)")
    args = parser.parse_args(argv)
    from .hub import HubError

    examples = sorted(str(p) for p in Path(args.examples).iterdir() if p.is_file()) if args.examples else None
    try:
        demo = build_demo(args.model, examples)
    except (HubError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    demo.launch(share=args.share, server_name=args.server_name, server_port=args.server_port,
                max_file_size=MAX_UPLOAD)
    return 0


if __name__ == "__main__":
    sys.exit(main())
