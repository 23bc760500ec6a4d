"""Every way a user loads an export: timm (local-dir: / hf-hub:), food101hf's Predictor, transformers'
AutoModelForImageClassification (+ AutoImageProcessor) and pipeline("image-classification"). Each gives, per image,
{label: probability} over every class, so tests (and the figures in the README) can compare them."""

from __future__ import annotations

from pathlib import Path

import timm
import torch
from PIL import Image


def timm_scores(model_id: str, paths: list[str]) -> list[dict[str, float]]:
    """timm's own recipe, as the model card shows it: create_model + its eval transform, PIL images, fp32."""
    model = timm.create_model(model_id, pretrained=True).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    labels = model.pretrained_cfg["label_names"]
    with torch.inference_mode():
        probs = model(torch.stack([transform(Image.open(p).convert("RGB")) for p in paths])).softmax(-1)
    return [dict(zip(labels, row.tolist())) for row in probs]


def food101hf_scores(ref: str | Path, paths: list[str], **kwargs) -> list[dict[str, float]]:
    from food101hf.predict import Predictor

    return Predictor(ref, **kwargs).label_scores(paths)


def transformers_auto_scores(ref: str, paths: list[str], **kwargs) -> list[dict[str, float]]:
    from transformers import AutoImageProcessor, AutoModelForImageClassification

    model = AutoModelForImageClassification.from_pretrained(ref, **kwargs).eval()
    processor = AutoImageProcessor.from_pretrained(ref, **kwargs)
    with torch.inference_mode():
        logits = model(**processor([Image.open(p).convert("RGB") for p in paths], return_tensors="pt")).logits
    return [{model.config.id2label[i]: p for i, p in enumerate(row.tolist())} for row in logits.softmax(-1)]


def transformers_pipeline_scores(ref: str, paths: list[str], **kwargs) -> list[dict[str, float]]:
    from transformers import pipeline

    classifier = pipeline("image-classification", model=ref, **kwargs)
    # every class: top_k=None falls back to the pipeline's default of 5 (transformers 5.24), whatever its docs say
    results = classifier(paths, top_k=classifier.model.config.num_labels)
    return [{r["label"]: r["score"] for r in result} for result in results]


def top1(scores: list[dict[str, float]]) -> list[str]:
    return [max(s, key=s.get) for s in scores]
