"""`evaluate` metric modules shipped with the package, loadable offline by path."""

import sys
from pathlib import Path

TOPK_ACCURACY = str(Path(__file__).with_name("topk_accuracy.py"))


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
