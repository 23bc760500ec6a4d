"""Top-k accuracy as an `evaluate` module that ships inside the package.

``evaluate.load("accuracy")`` downloads its script from the Hub; loading this file by path works offline:
``evaluate.load(food101hf.metrics.TOPK_ACCURACY)``.
"""

import datasets
import evaluate

_DESCRIPTION = "Fraction of examples whose reference label is among the first k ranked predictions."
_KWARGS_DESCRIPTION = """
Args:
    predictions (list of list of int): predicted labels per example, best first (e.g. logits.topk(5).indices).
    references (list of int): the true label per example.
    k (list of int): the cut-offs to report, default [1, 5]. A k above the number of ranked predictions counts
        all of them.
Returns:
    top{k} (float): for each k, the fraction of examples with the reference among the first k predictions.
Example:
    >>> metric = evaluate.load("food101hf/metrics/topk_accuracy.py")
    >>> metric.compute(predictions=[[2, 0], [1, 2]], references=[2, 2], k=[1, 2])
    {'top1': 0.5, 'top2': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopkAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features({
                "predictions": datasets.Sequence(datasets.Value("int64")),
                "references": datasets.Value("int64"),
            }),
        )

    def _compute(self, predictions, references, k=(1, 5)):
        n = len(references)
        return {f"top{cut}": sum(ref in preds[:cut] for preds, ref in zip(predictions, references)) / n
                for cut in k}
