import logging

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, roc_auc_score

from lakeguard.errors import ConfigError, DataError
from lakeguard.metrics.utility import (
    AucResult,
    PairedDifference,
    UtilityReport,
    _RankedColumn,
    _resample_counts,
    _weighted_auc,
    accuracy,
    auc,
    evaluate_scores,
    paired_auc_difference,
)
from lakeguard.tasks import Task


def _softmax(logits):
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


def _single_label(n, n_classes, *, seed=0, signal=1.0):
    """Labels (n, 1) and softmax scores (n, n_classes) that carry some signal about the label."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_classes, size=(n, 1))
    logits = rng.normal(size=(n, n_classes))
    logits[np.arange(n), y[:, 0]] += signal
    return y, _softmax(logits)


def _multi_label(n, n_labels, *, seed=0):
    """Labels (n, L) of 0/1 and sigmoid scores (n, L); label 3 is constant 0."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, n_labels)) < 0.3).astype(np.int64)
    y[:, 3] = 0
    logits = rng.normal(size=(n, n_labels)) + 1.5 * y
    return y, 1.0 / (1.0 + np.exp(-logits))


# ---------------------------------------------------------------------------------------------------
# AUC and accuracy against sklearn


def test_auc_binary_matches_sklearn():
    y, p = _single_label(300, 2, seed=1)
    result = auc(y, p, Task.BINARY)
    assert result.value == pytest.approx(roc_auc_score(y[:, 0], p[:, 1]), abs=1e-12)
    assert result.skipped_labels == ()


@pytest.mark.parametrize("task", [Task.MULTI_CLASS, Task.ORDINAL])
def test_auc_multi_class_matches_sklearn(task):
    y, p = _single_label(400, 5, seed=2)
    expected = np.mean([roc_auc_score(y[:, 0] == c, p[:, c]) for c in range(5)])
    result = auc(y, p, task)
    assert result.value == pytest.approx(expected, abs=1e-12)
    assert result.skipped_labels == ()


def test_auc_multi_class_skips_absent_class(caplog):
    y, p = _single_label(400, 5, seed=3)
    y[y == 2] = 0  # class 2 absent from y_true
    expected = np.mean([roc_auc_score(y[:, 0] == c, p[:, c]) for c in (0, 1, 3, 4)])
    with caplog.at_level(logging.WARNING, logger="lakeguard.metrics.utility"):
        result = auc(y, p, Task.MULTI_CLASS)
    assert result.value == pytest.approx(expected, abs=1e-12)
    assert result.skipped_labels == (2,)
    assert "[2]" in caplog.text


def test_auc_multi_label_skips_constant_label(caplog):
    y, p = _multi_label(500, 14, seed=4)
    defined = [k for k in range(14) if k != 3]
    expected = np.mean([roc_auc_score(y[:, k], p[:, k]) for k in defined])
    with caplog.at_level(logging.WARNING, logger="lakeguard.metrics.utility"):
        result = auc(y, p, Task.MULTI_LABEL)
    assert result.value == pytest.approx(expected, abs=1e-12)
    assert result.skipped_labels == (3,)
    assert "[3]" in caplog.text


def test_auc_accepts_task_string_and_flat_labels():
    y, p = _single_label(200, 2, seed=5)
    assert auc(y[:, 0], p, "binary-class") == auc(y, p, Task.BINARY)


def test_auc_all_labels_undefined_raises():
    y = np.ones((50, 1), dtype=np.int64)
    _, p = _single_label(50, 2, seed=6)
    with pytest.raises(DataError, match="undefined for every class.*split"):
        auc(y, p, Task.BINARY)
    with pytest.raises(ValueError):  # DataError is a ValueError
        auc(y, p, Task.BINARY)


def test_accuracy_binary_matches_sklearn():
    y, p = _single_label(300, 2, seed=7)
    for threshold in (0.3, 0.5, 0.7):
        expected = accuracy_score(y[:, 0], p[:, 1] > threshold)
        assert accuracy(y, p, Task.BINARY, threshold=threshold) == pytest.approx(expected)


def test_accuracy_multi_class_matches_sklearn():
    y, p = _single_label(400, 5, seed=8)
    assert accuracy(y, p, Task.MULTI_CLASS) == pytest.approx(accuracy_score(y[:, 0], p.argmax(axis=1)))


def test_accuracy_multi_label_is_mean_of_label_accuracies():
    y, p = _multi_label(500, 14, seed=9)
    expected = np.mean([accuracy_score(y[:, k], p[:, k] > 0.5) for k in range(14)])
    assert accuracy(y, p, Task.MULTI_LABEL) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------
# Bootstrap


def test_weighted_auc_matches_sklearn_on_resamples():
    y, p = _single_label(200, 3, seed=10)
    score = np.round(p[:, 1], 1)  # coarse scores, so that many samples tie
    positive = y[:, 0] == 1
    counts = _resample_counts(np.random.default_rng(0), 5, len(score))
    values = _weighted_auc(_RankedColumn(positive, score), counts)
    for row, value in zip(counts, values):
        indices = np.repeat(np.arange(len(score)), row.astype(int))
        assert value == pytest.approx(roc_auc_score(positive[indices], score[indices]), abs=1e-12)


def test_resample_counts_draw_n_samples():
    counts = _resample_counts(np.random.default_rng(0), 7, 30)
    assert counts.shape == (7, 30)
    np.testing.assert_array_equal(counts.sum(axis=1), np.full(7, 30))


@pytest.mark.parametrize(
    ("task", "make"),
    [
        (Task.BINARY, lambda: _single_label(300, 2, seed=11)),
        (Task.MULTI_CLASS, lambda: _single_label(400, 5, seed=12)),
        (Task.MULTI_LABEL, lambda: _multi_label(400, 14, seed=13)),
    ],
)
def test_evaluate_scores_interval_contains_point(task, make):
    y, p = make()
    report = evaluate_scores(y, p, task, n_resamples=500, seed=0)
    assert isinstance(report, UtilityReport)
    assert report.auc == pytest.approx(auc(y, p, task).value)
    assert report.acc == pytest.approx(accuracy(y, p, task))
    assert report.auc_ci[0] <= report.auc <= report.auc_ci[1]
    assert report.acc_ci[0] <= report.acc <= report.acc_ci[1]
    assert report.auc_ci[0] < report.auc_ci[1]
    assert report.n == len(y)
    assert report.n_resamples == 500


def test_evaluate_scores_interval_narrows_with_n():
    small_y, small_p = _single_label(100, 5, seed=14)
    large_y, large_p = _single_label(1600, 5, seed=14)
    small = evaluate_scores(small_y, small_p, Task.MULTI_CLASS, n_resamples=400)
    large = evaluate_scores(large_y, large_p, Task.MULTI_CLASS, n_resamples=400)
    assert large.auc_ci[1] - large.auc_ci[0] < small.auc_ci[1] - small.auc_ci[0]
    assert large.acc_ci[1] - large.acc_ci[0] < small.acc_ci[1] - small.acc_ci[0]


def test_evaluate_scores_is_reproducible():
    y, p = _single_label(200, 5, seed=15)
    first = evaluate_scores(y, p, Task.MULTI_CLASS, n_resamples=200, seed=3)
    second = evaluate_scores(y, p, Task.MULTI_CLASS, n_resamples=200, seed=3)
    other = evaluate_scores(y, p, Task.MULTI_CLASS, n_resamples=200, seed=4)
    assert first == second
    assert first.auc_ci != other.auc_ci


def test_evaluate_scores_redraws_undefined_resamples():
    # One positive among 12: about 1/e of resamples miss it and must be redrawn, not counted.
    y = np.zeros((12, 1), dtype=np.int64)
    y[5] = 1
    p = np.tile([0.7, 0.3], (12, 1))
    p[5] = [0.1, 0.9]
    report = evaluate_scores(y, p, Task.BINARY, n_resamples=300)
    assert report.auc == 1.0
    assert report.auc_ci == (1.0, 1.0)


def test_evaluate_scores_to_dict_is_json_ready():
    y, p = _multi_label(200, 14, seed=16)
    data = evaluate_scores(y, p, Task.MULTI_LABEL, n_resamples=100).to_dict()
    assert data["skipped_labels"] == [3]
    assert isinstance(data["auc_ci"], list) and len(data["auc_ci"]) == 2
    assert set(data) == {"auc", "acc", "auc_ci", "acc_ci", "skipped_labels", "n", "n_resamples", "confidence"}


# ---------------------------------------------------------------------------------------------------
# Paired difference


@pytest.mark.parametrize(
    ("task", "make"),
    [
        (Task.BINARY, lambda: _single_label(300, 2, seed=17)),
        (Task.MULTI_CLASS, lambda: _single_label(400, 5, seed=18)),
        (Task.MULTI_LABEL, lambda: _multi_label(300, 14, seed=19)),
    ],
)
def test_paired_difference_identical_scores_is_zero(task, make):
    y, p = make()
    result = paired_auc_difference(y, p, p.copy(), task, n_resamples=300)
    assert isinstance(result, PairedDifference)
    assert result.delta == 0.0
    assert (result.ci_low, result.ci_high) == (0.0, 0.0)


def test_paired_difference_matches_auc_difference():
    y, trained = _single_label(400, 5, seed=20, signal=1.5)
    rng = np.random.default_rng(21)
    sanitized = _softmax(np.log(trained) + rng.normal(scale=1.0, size=trained.shape))
    result = paired_auc_difference(y, trained, sanitized, Task.MULTI_CLASS, n_resamples=500)
    expected = auc(y, sanitized, Task.MULTI_CLASS).value - auc(y, trained, Task.MULTI_CLASS).value
    assert result.delta == pytest.approx(expected, abs=1e-12)
    assert result.auc_a == pytest.approx(auc(y, trained, Task.MULTI_CLASS).value)
    assert result.ci_low <= result.delta <= result.ci_high
    assert result.ci_high < 0.0  # the added noise costs more AUC than the interval is wide
    assert result.to_dict()["n_resamples"] == 500


def test_paired_interval_narrower_than_unpaired():
    # Two models whose errors are strongly correlated: pairing removes the split's own spread.
    y, trained = _single_label(400, 5, seed=22)
    rng = np.random.default_rng(23)
    sanitized = _softmax(np.log(trained) + rng.normal(scale=0.1, size=trained.shape))
    paired = paired_auc_difference(y, trained, sanitized, Task.MULTI_CLASS, n_resamples=400)
    alone = evaluate_scores(y, trained, Task.MULTI_CLASS, n_resamples=400)
    assert paired.ci_high - paired.ci_low < alone.auc_ci[1] - alone.auc_ci[0]


# ---------------------------------------------------------------------------------------------------
# Invalid inputs

_Y5, _P5 = _single_label(20, 5, seed=30)
_Y2, _P2 = _single_label(20, 2, seed=31)
_YML, _PML = _multi_label(20, 14, seed=32)


def _with_nan(p):
    p = p.copy()
    p[4, 1] = np.nan
    return p


@pytest.mark.parametrize(
    ("y", "p", "task", "error", "match"),
    [
        (_Y5[:10], _P5, Task.MULTI_CLASS, DataError, r"same number of samples; got 10 and 20"),
        (_Y5, _P5[:, :3], Task.MULTI_CLASS, DataError, r"y_true values must lie in \[0, 2\].*got values in \[0, 4\]"),
        (_Y2, _P5, Task.BINARY, DataError, r"y_score must have 2 columns.*got shape \(20, 5\)"),
        (_Y5, _P5[:, :1], Task.MULTI_CLASS, DataError, r"at least 2.*got shape \(20, 1\)"),
        (_Y5, _P5[:, 0], Task.MULTI_CLASS, DataError, r"y_score must have shape \(N, C\); got shape \(20,\)"),
        (_Y5, _with_nan(_P5), Task.MULTI_CLASS, DataError, r"y_score must be finite; got 1 NaN.*row 4"),
        (_Y5, _P5 * 10 - 5, Task.MULTI_CLASS, DataError, r"probabilities in \[0, 1\].*Apply softmax"),
        (_Y2 + 1, _P2, Task.BINARY, DataError, r"y_true values must lie in \[0, 1\].*got values in \[1, 2\]"),
        (-_Y5, _P5, Task.MULTI_CLASS, DataError, r"y_true values must lie in \[0, 4\]"),
        (_Y5 + 0.5, _P5, Task.MULTI_CLASS, DataError, r"y_true must contain integer labels"),
        (_Y5.astype(str), _P5, Task.MULTI_CLASS, DataError, r"y_true must contain integer labels; got dtype"),
        (np.hstack([_Y5, _Y5]), _P5, Task.MULTI_CLASS, DataError, r"y_true must have shape \(N, 1\).*got shape \(20, 2\)"),
        (_YML[:, :5], _PML, Task.MULTI_LABEL, DataError, r"y_true has 5 labels but y_score has 14 columns"),
        (_YML * 2, _PML, Task.MULTI_LABEL, DataError, r"y_true values must lie in \[0, 1\]"),
        (_YML[:, 0], _PML, Task.MULTI_LABEL, DataError, r"y_true must have shape \(N, L\)"),
        (_YML[:, :0], _PML[:, :0], Task.MULTI_LABEL, DataError, r"at least 1.*got shape \(20, 0\)"),
        (_Y5[:0], _P5[:0], Task.MULTI_CLASS, DataError, r"empty"),
        (_Y5, _P5, "regression", ConfigError, r"task='regression' is not a known task"),
    ],
)
def test_auc_rejects_invalid_inputs(y, p, task, error, match):
    with pytest.raises(error, match=match):
        auc(y, p, task)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_resamples": 0}, r"n_resamples must be a positive integer; got 0"),
        ({"n_resamples": 10.0}, r"n_resamples must be a positive integer; got 10.0"),
        ({"seed": "a"}, r"seed must be an integer; got 'a'"),
        ({"confidence": 1.0}, r"confidence must be a float in \(0, 1\).*got 1.0"),
        ({"confidence": 95}, r"confidence must be a float in \(0, 1\).*got 95"),
        ({"threshold": 1.5}, r"threshold must be a float in \[0, 1\]; got 1.5"),
    ],
)
def test_evaluate_scores_rejects_invalid_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        evaluate_scores(_Y5, _P5, Task.MULTI_CLASS, **kwargs)


def test_paired_difference_rejects_mismatched_models():
    with pytest.raises(DataError, match=r"score_b must have 2 columns.*got shape \(20, 5\)"):
        paired_auc_difference(_Y2, _P2, _P5, Task.BINARY)
    with pytest.raises(DataError, match=r"score_a must be finite"):
        paired_auc_difference(_Y5, _with_nan(_P5), _P5, Task.MULTI_CLASS)
    with pytest.raises(DataError, match=r"y_true values must lie in \[0, 3\]"):
        paired_auc_difference(_Y5, _P5, _P5[:, :4], Task.MULTI_CLASS)
    with pytest.raises(DataError, match=r"score_a and score_b must have the same shape; got \(20, 5\) and \(20, 6\)"):
        paired_auc_difference(_Y5, _P5, np.hstack([_P5, np.zeros((20, 1))]), Task.MULTI_CLASS)


def test_auc_result_is_frozen():
    result = AucResult(value=0.5, skipped_labels=())
    with pytest.raises(AttributeError):
        result.value = 1.0
