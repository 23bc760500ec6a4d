"""Scores and how far to trust them: the `evaluate` metric module shipped with the package (loadable offline by
path), top-1's confidence interval, and the warning for an evaluation set too small to tell models apart. Light
imports only (math), so the card and the app can use it without torch."""

import math
import sys
from pathlib import Path

TOPK_ACCURACY = str(Path(__file__).with_name("topk_accuracy.py"))
Z95 = 1.959963984540054  # the standard normal's 97.5th percentile: a two-sided 95% interval
TOO_WIDE = 0.10  # a top-1 interval wider than 10 points cannot separate models a recipe change separates (1-5)


def top_k_cuts(num_classes: int) -> list[int]:
    """The k of top-k worth reporting: 1, and 5 only below the number of classes (a 3-class model's top-5 is 100%
    whatever it learned)."""
    return [1, 5] if num_classes > 5 else [1]


def wilson_interval(correct: int, total: int, z: float = Z95) -> list[float]:
    """[low, high]: the Wilson score interval of the proportion correct/total (E. B. Wilson, JASA 1927), 95% by
    default. It treats the eval images as a random sample of the images the model will meet; unlike the normal
    approximation p ± z·sqrt(p(1-p)/n) it stays inside [0, 1] and keeps its coverage for small n and p near 0 or 1
    (Brown, Cai & DasGupta, Statistical Science 2001). Raises ValueError for total < 1."""
    if total < 1:
        raise ValueError(f"a confidence interval needs at least one image, got {total}")
    p, z2 = correct / total, z * z
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = z / (1 + z2 / total) * math.sqrt(p * (1 - p) / total + z2 / (4 * total * total))
    return [max(0.0, centre - half), min(1.0, centre + half)]


def small_eval_warning(top1_ci95: list[float], images_per_class: list[int]) -> str | None:
    """A sentence for a person when top-1's 95% interval is wider than TOO_WIDE (10 points): the eval images, per
    class, and what the interval means; None for an evaluation big enough."""
    low, high = top1_ci95
    if high - low <= TOO_WIDE:
        return None
    fewest, most = min(images_per_class), max(images_per_class)
    per_class = f"{fewest}" if fewest == most else f"{fewest}-{most}"
    return (f"only {sum(images_per_class)} eval images ({per_class} per class): top-1 lies anywhere in "
            f"{low:.3f}-{high:.3f} (95% interval), so models that differ by less than {high - low:.0%} cannot be told "
            f"apart on them; evaluate on more images (e.g. a validation/ folder with more per class)")


def describe_scores(metrics: dict) -> str:
    """'top-1 0.9750 (95% CI 0.943-0.989), top-5 1.0000' for a log line (top-5 where it was scored)."""
    text = f"top-1 {metrics['top1']:.4f}"
    if "top1_ci95" in metrics:
        text += " (95% CI {:.3f}-{:.3f})".format(*metrics["top1_ci95"])
    return text + (f", top-5 {metrics['top5']:.4f}" if "top5" in metrics else "")


def load_topk_accuracy():
    """The shipped top-k accuracy module (`evaluate.load` by path, kept in memory).

    `import evaluate` also imports transformers.pipelines whenever transformers is installed, for its Evaluator
    classes (huggingface/evaluate#387, #674), which a metric loaded by path never uses: 6.0 instead of 2.5 s of
    CPU on this project's 2-core machine (busy; medians of 2), paid at the first evaluation of every run. So while
    evaluate is imported, transformers (unless already imported) is marked absent in sys.modules, Python's way to
    make an import fail, which evaluate handles (its TRANSFORMERS_AVAILABLE); the marks are then removed, so
    transformers imports as usual afterwards. Imported here, not at module level: only once there is something
    to score."""
    blocked = [name for name in ("transformers", "transformers.pipelines") if name not in sys.modules]
    sys.modules.update(dict.fromkeys(blocked))
    try:
        import evaluate
    finally:
        for name in blocked:
            if sys.modules.get(name, False) is None:
                del sys.modules[name]
    return evaluate.load(TOPK_ACCURACY, keep_in_memory=True)
