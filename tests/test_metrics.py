"""How far a score can be trusted (food101hf.metrics): top-1's Wilson interval, the small-eval warning, top-k cuts."""

import pytest

from food101hf.metrics import describe_scores, small_eval_warning, top_k_cuts, wilson_interval


def test_the_wilson_interval_matches_the_textbook_and_scipy():
    assert wilson_interval(2, 4) == pytest.approx([0.1500, 0.8500], abs=5e-5)  # the 4-image hold-out
    assert wilson_interval(195, 200) == pytest.approx([0.9428, 0.9893], abs=5e-5)  # the demo's 0.975
    assert wilson_interval(0, 10)[0] == 0 and wilson_interval(10, 10)[1] == pytest.approx(1)  # inside [0, 1]
    stats = pytest.importorskip("scipy.stats")
    for correct, total in ((0, 1), (1, 3), (163, 200), (24000, 25250)):
        ci = stats.binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(correct, total) == pytest.approx([ci.low, ci.high], abs=1e-9)
    with pytest.raises(ValueError, match="at least one image"):
        wilson_interval(0, 0)


def test_a_small_eval_set_is_said_to_be_too_small_with_its_images_per_class():
    warning = small_eval_warning(wilson_interval(2, 4), [1, 1, 2])
    assert warning == ("only 4 eval images (1-2 per class): top-1 lies anywhere in 0.150-0.850 (95% interval), so "
                       "models that differ by less than 70% cannot be told apart on them; evaluate on more images "
                       "(e.g. a validation/ folder with more per class)")
    assert small_eval_warning(wilson_interval(195, 200), [20] * 10) is None  # the demo: 4.6 points wide
    assert "(20 per class)" in small_eval_warning(wilson_interval(160, 200), [20] * 10)  # 0.80: 11 points wide


def test_top_5_only_where_it_says_something():
    assert top_k_cuts(3) == top_k_cuts(5) == [1] and top_k_cuts(6) == top_k_cuts(101) == [1, 5]
    assert describe_scores({"top1": 0.5, "top1_ci95": [0.15, 0.85]}) == "top-1 0.5000 (95% CI 0.150-0.850)"
    assert describe_scores({"top1": 0.9, "top5": 0.99}) == "top-1 0.9000, top-5 0.9900"
