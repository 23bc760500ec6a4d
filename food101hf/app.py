"""A Gradio web demo of a trained model: upload, paste or take a photo, see the top-5 dishes with their confidence.

    python -m food101hf.app --model outputs/demo                  # a folder written by train.py or polish.py
    python -m food101hf.app --model org/name [--share] [--server-port 7860] [--server-name 0.0.0.0]

The page shows the model's reported results (metrics.json: top-1/top-5, split, resolution) and its dataset, and
example photos when that dataset is on this machine (the generated demo, the local folder it was trained on, or a
Hub dataset in the datasets cache).
A file that is not a readable image gets a message in the page, not a stack trace. A Hub Space runs the same app
(`python -m food101hf.hub space`).
"""

from __future__ import annotations

if __name__ == "__main__":  # answer --help and refuse bad flags before gradio and torch load
    from food101hf.cli import parse_early
    from food101hf.parsers import app_parser

    parse_early(app_parser)

import functools
import json
import os
import tempfile
from pathlib import Path

import gradio as gr
import yaml

from .cli import run
from .errors import ImageError
from .outputs import dataset_kind, dataset_name, example_images, trained_folder
from .parsers import app_parser
from .predict import Predictor

MAX_UPLOAD = "20mb"  # Gradio refuses larger uploads in the page; a phone photo is 2-8 MB


def model_summary(folder: Path) -> str:
    """The panel under the title: reported top-1 (its interval, top-5 where scored) with split and resolution, the
    warning of a small eval split, and the dataset."""
    metrics = json.loads((folder / "metrics.json").read_text()) if (folder / "metrics.json").is_file() else {}
    recipe_file = folder / "train_config.yaml"
    dataset = yaml.safe_load(recipe_file.read_text()).get("dataset") if recipe_file.is_file() else None
    lines = []
    if metrics:
        interval = " (95% interval {:.1%}-{:.1%})".format(*metrics["top1_ci95"]) if "top1_ci95" in metrics else ""
        top5 = f", top-5 {metrics['top5']:.1%}" if "top5" in metrics else ""
        lines.append(f"**Reported:** top-1 {metrics['top1']:.1%}{interval}{top5} on {metrics['num_eval_samples']} "
                     f"{metrics.get('eval_split', 'validation')} images at {metrics['image_size']} px.")
        lines += [f"**Warning:** {metrics['eval_warning']}."] if "eval_warning" in metrics else []
    if dataset is not None:
        kind = dataset_kind(dataset)
        about = {"demo": "food101hf's generated demo: synthetic drawings, so it will not recognise real photos",
                 "hub": "a Hub dataset", "local": "a local image folder"}[kind]
        lines.append(f"**Dataset:** `{dataset_name(dataset)}` ({about}).")
    return "\n\n".join(lines) or "No reported results for this model (no metrics.json)."


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
    `outputs.example_images`."""
    folder = trained_folder(model)
    predictor = predictor or Predictor(folder)
    if examples is None:  # a Hub dataset's are written to a folder of this process's
        examples = example_images(folder, Path(tempfile.gettempdir()) / f"food101hf-examples-{os.getpid()}")

    with gr.Blocks(title=f"food101hf: {Path(str(model)).name}") as demo:
        gr.Markdown(f"# What dish is this?\nModel `{model}`: {len(predictor.labels)} classes, served at "
                    f"{predictor.data_config['input_size'][-1]} px.\n\n{model_summary(folder)}")
        with gr.Row():
            image = gr.Image(label="Photo", type="filepath", sources=["upload", "clipboard", "webcam"])
            with gr.Column():
                label = gr.Label(label="Top 5", num_top_classes=5)
                message = gr.Markdown(elem_id="message", label="message")  # the label names it in the API too
        # preprocess=False: the upload reaches `classify` undecoded, so an unreadable file gets our message
        # (ImageError says what is wrong) instead of Gradio's generic "Error"
        image.change(functools.partial(classify, predictor), image, [label, message], preprocess=False,
                     api_name="classify")
        if examples:
            gr.Examples(examples, image, label="Examples from the model's validation split")
    return demo


def main(argv: list[str] | None = None) -> int:
    """Serve the page until interrupted. Raises a UserError (one line from `run`) for a model that cannot load."""
    args = app_parser().parse_args(argv)
    examples = sorted(str(p) for p in Path(args.examples).iterdir() if p.is_file()) if args.examples else None
    demo = build_demo(args.model, examples)
    # quiet: Gradio's own start-up lines name its launch() arguments ("set `share=True`"); ours name our flags
    demo.launch(share=args.share, server_name=args.server_name, server_port=args.server_port,
                max_file_size=MAX_UPLOAD, quiet=True, prevent_thread_lock=True)
    print(f"Serving {args.model} on {demo.local_url}   (Ctrl-C stops it"
          + ("; Gradio prints the public link" if args.share else "; --share adds a public gradio.live link") + ")",
          flush=True)
    demo.block_thread()
    return 0


if __name__ == "__main__":
    run(main)
