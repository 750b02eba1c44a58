"""Utility metrics of a classifier as MedMNIST reports them: AUC and accuracy, with bootstrap intervals.

AUC and accuracy follow ``medmnist.evaluator.getAUC`` and ``getACC`` (medmnist 3.0.2):

* binary-class: ROC AUC of the positive-class score ``y_score[:, -1]``; accuracy thresholds that score.
* multi-class and ordinal-regression: mean over classes of the one-vs-rest ROC AUC of ``y_score[:, c]``;
  accuracy of the argmax.
* multi-label: mean over labels of the per-label ROC AUC; accuracy is the mean over all N x L entries of
  the thresholded scores.

One deliberate difference: a class or label whose column of ``y_true`` contains a single class has no
defined AUC. MedMNIST fails on it, while :func:`auc` leaves it out of the mean, reports it in
``skipped_labels`` and logs a warning.

Intervals are percentile bootstrap intervals over samples (Efron and Tibshirani, "An Introduction to
the Bootstrap", 1993, chapter 13). A resample is scored from the count of times it draws each sample,
so one sort per class serves every resample (see :func:`_weighted_auc`).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Callable

import numpy as np
from sklearn.metrics import roc_auc_score

from lakeguard.errors import ConfigError, DataError
from lakeguard.tasks import Task

_logger = logging.getLogger(__name__)

# A resample whose AUC is undefined for every class is redrawn. Each round redraws only those, so a
# class present in a fraction p of resamples leaves about (1 - p) ** rounds of them undefined.
_MAX_REDRAW_ROUNDS = 100

# Resamples x samples scored at once; bounds each temporary float64 array at 32 MiB.
_CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class AucResult:
    """AUC of one set of scores.

    Attributes:
        value: mean ROC AUC over the classes or labels where it is defined, float in [0, 1].
        skipped_labels: classes (single-label tasks) or labels (multi-label) left out of the mean
            because ``y_true`` contains only one class for them.
    """

    value: float
    skipped_labels: tuple[int, ...]


@dataclass(frozen=True)
class UtilityReport:
    """AUC and accuracy of one model on one split, with percentile bootstrap intervals.

    Attributes:
        auc: mean ROC AUC, float in [0, 1].
        acc: accuracy, float in [0, 1].
        auc_ci: (low, high) bootstrap interval of ``auc``.
        acc_ci: (low, high) bootstrap interval of ``acc``.
        skipped_labels: classes or labels without a defined AUC, left out of ``auc``.
        n: number of samples.
        n_resamples: number of bootstrap resamples behind the intervals.
        confidence: coverage of the intervals, float in (0, 1).
    """

    auc: float
    acc: float
    auc_ci: tuple[float, float]
    acc_ci: tuple[float, float]
    skipped_labels: tuple[int, ...]
    n: int
    n_resamples: int
    confidence: float

    def to_dict(self) -> dict:
        """Return the report as JSON-ready builtins (tuples become lists)."""
        data = asdict(self)
        data["auc_ci"] = list(self.auc_ci)
        data["acc_ci"] = list(self.acc_ci)
        data["skipped_labels"] = list(self.skipped_labels)
        return data


@dataclass(frozen=True)
class PairedDifference:
    """AUC difference between two models scored on the same samples.

    Attributes:
        delta: ``auc_b - auc_a`` on the full set, float in [-1, 1].
        ci_low: lower end of the paired percentile bootstrap interval of ``delta``.
        ci_high: upper end of that interval.
        n_resamples: number of bootstrap resamples.
        confidence: coverage of the interval, float in (0, 1).
        n: number of samples.
        auc_a: AUC of model a (the trained model) on the full set.
        auc_b: AUC of model b (the sanitized model) on the full set.
    """

    delta: float
    ci_low: float
    ci_high: float
    n_resamples: int
    confidence: float
    n: int
    auc_a: float
    auc_b: float

    def to_dict(self) -> dict:
        """Return the difference as JSON-ready builtins."""
        return asdict(self)


# ---------------------------------------------------------------------------------------------------
# Input checks


def _check_task(task: Task | str) -> Task:
    try:
        return Task(task)
    except ValueError:
        expected = ", ".join(repr(t.value) for t in Task)
        raise ConfigError(
            f"task={task!r} is not a known task; expected a lakeguard.tasks.Task or one of {expected}."
        ) from None


def _check_scores(y_score: np.ndarray, name: str, task: Task) -> np.ndarray:
    """Check one score array and return it as float64 of shape (N, C)."""
    try:
        scores = np.asarray(y_score, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise DataError(
            f"{name} must be a numeric array of shape (N, C); got {type(y_score).__name__}, "
            f"which does not convert to float: {e}"
        ) from e
    if scores.ndim != 2:
        raise DataError(f"{name} must have shape (N, C); got shape {scores.shape}.")
    if task is Task.BINARY and scores.shape[1] != 2:
        raise DataError(
            f"{name} must have 2 columns (softmax over negative and positive class) for a {task.value} task; "
            f"got shape {scores.shape}."
        )
    if task in (Task.MULTI_CLASS, Task.ORDINAL) and scores.shape[1] < 2:
        raise DataError(
            f"{name} must have one column per class (at least 2) for a {task.value} task; got shape {scores.shape}."
        )
    if task.is_multi_label and scores.shape[1] == 0:
        raise DataError(
            f"{name} must have one column per label (at least 1) for a {task.value} task; got shape {scores.shape}."
        )
    if scores.shape[0] == 0:
        raise DataError(f"{name} is empty; expected at least one sample.")

    not_finite = ~np.isfinite(scores)
    if not_finite.any():
        row = int(np.argwhere(not_finite)[0][0])
        raise DataError(
            f"{name} must be finite; got {int(not_finite.sum())} NaN or infinite values, the first in row {row}. "
            "Check the model outputs for divergence."
        )
    low, high = float(scores.min()), float(scores.max())
    if low < 0.0 or high > 1.0:
        raise DataError(
            f"{name} must contain probabilities in [0, 1]; got values in [{low:g}, {high:g}]. "
            "Apply softmax (single-label tasks) or sigmoid (multi-label) to the logits first."
        )
    return scores


def _check_labels(y_true: np.ndarray, task: Task, n_columns: int) -> np.ndarray:
    """Check the labels and return them as int64 of shape (N, 1) or (N, L)."""
    labels = np.asarray(y_true)
    if labels.dtype == np.bool_:
        labels = labels.astype(np.int64)
    if not (np.issubdtype(labels.dtype, np.integer) or np.issubdtype(labels.dtype, np.floating)):
        raise DataError(f"y_true must contain integer labels; got dtype {labels.dtype}.")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or not np.all(labels == np.round(labels)):
            raise DataError("y_true must contain integer labels; got non-integer or non-finite floats.")
    labels = labels.astype(np.int64)

    if task.is_multi_label:
        if labels.ndim != 2:
            raise DataError(f"y_true must have shape (N, L) of 0/1 for a {task.value} task; got shape {labels.shape}.")
        if labels.shape[1] != n_columns:
            raise DataError(
                f"y_true has {labels.shape[1]} labels but y_score has {n_columns} columns; "
                "expected one score column per label."
            )
        allowed = 2
    else:
        if labels.ndim == 1:
            labels = labels[:, None]
        if labels.ndim != 2 or labels.shape[1] != 1:
            raise DataError(
                f"y_true must have shape (N, 1) of class ids for a {task.value} task; got shape {labels.shape}."
            )
        allowed = n_columns

    if labels.size == 0:
        raise DataError("y_true is empty; expected at least one sample.")
    low, high = int(labels.min()), int(labels.max())
    if low < 0 or high >= allowed:
        raise DataError(
            f"y_true values must lie in [0, {allowed - 1}] for a {task.value} task with {n_columns} score columns; "
            f"got values in [{low}, {high}]."
        )
    return labels


def _check_inputs(
    y_true: np.ndarray, y_score: np.ndarray, task: Task | str, *, score_name: str = "y_score"
) -> tuple[np.ndarray, np.ndarray, Task]:
    """Validate the arrays of one model and return (labels, scores, task) in canonical form."""
    task = _check_task(task)
    scores = _check_scores(y_score, score_name, task)
    labels = _check_labels(y_true, task, scores.shape[1])
    if labels.shape[0] != scores.shape[0]:
        raise DataError(
            f"y_true and {score_name} must have the same number of samples; "
            f"got {labels.shape[0]} and {scores.shape[0]}."
        )
    return labels, scores, task


def _check_bootstrap_args(n_resamples: int, seed: int, confidence: float) -> None:
    if isinstance(n_resamples, bool) or not isinstance(n_resamples, (int, np.integer)) or n_resamples < 1:
        raise ConfigError(f"n_resamples must be a positive integer; got {n_resamples!r}.")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ConfigError(f"seed must be an integer; got {seed!r}.")
    if isinstance(confidence, bool) or not isinstance(confidence, (int, float)) or not 0.0 < confidence < 1.0:
        raise ConfigError(f"confidence must be a float in (0, 1), e.g. 0.95; got {confidence!r}.")


def _check_threshold(threshold: float) -> None:
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0.0 <= threshold <= 1.0:
        raise ConfigError(f"threshold must be a float in [0, 1]; got {threshold!r}.")


# ---------------------------------------------------------------------------------------------------
# One-vs-rest columns and per-sample correctness


def _ovr_columns(labels: np.ndarray, scores: np.ndarray, task: Task) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
    """Split a task into binary AUC problems.

    Returns:
        targets: bool (N, K), True where the sample is positive for column k.
        column_scores: float (N, K), the score ranked for column k.
        label_ids: the class or label id of each column.
    """
    if task is Task.BINARY:
        return labels[:, :1] == 1, scores[:, -1:], (1,)
    if task.is_multi_label:
        return labels == 1, scores, tuple(range(scores.shape[1]))
    classes = np.arange(scores.shape[1])
    return labels[:, :1] == classes[None, :], scores, tuple(int(c) for c in classes)


def _defined_columns(targets: np.ndarray) -> np.ndarray:
    """Return a bool (K,) mask of columns whose targets hold both classes."""
    n_pos = targets.sum(axis=0)
    return (n_pos > 0) & (n_pos < targets.shape[0])


def _correct(labels: np.ndarray, scores: np.ndarray, task: Task, threshold: float) -> np.ndarray:
    """Return the per-sample accuracy, float (N,) in [0, 1] (a fraction of labels for multi-label)."""
    if task is Task.BINARY:
        return ((scores[:, -1] > threshold) == (labels[:, 0] == 1)).astype(np.float64)
    if task.is_multi_label:
        return ((scores > threshold) == (labels == 1)).mean(axis=1)
    return (scores.argmax(axis=1) == labels[:, 0]).astype(np.float64)


def _raise_all_undefined(label_ids: tuple[int, ...], task: Task) -> None:
    kind = "label" if task.is_multi_label else "class"
    raise DataError(
        f"AUC is undefined for every {kind}: y_true contains a single class for each of {kind}s {list(label_ids)}. "
        "The evaluation split needs positive and negative samples; check how the split was drawn or enlarge it."
    )


def _auc_point(labels: np.ndarray, scores: np.ndarray, task: Task, *, log_skipped: bool = True) -> AucResult:
    targets, column_scores, label_ids = _ovr_columns(labels, scores, task)
    defined = _defined_columns(targets)
    if not defined.any():
        _raise_all_undefined(label_ids, task)

    skipped = tuple(label_ids[k] for k in np.flatnonzero(~defined))
    if skipped and log_skipped:
        _logger.warning(
            "AUC is undefined for %s %s because y_true contains a single class for each, "
            "so they are left out of the mean",
            "labels" if task.is_multi_label else "classes",
            list(skipped),
        )
    values = [roc_auc_score(targets[:, k], column_scores[:, k]) for k in np.flatnonzero(defined)]
    return AucResult(value=float(np.mean(values)), skipped_labels=skipped)


# ---------------------------------------------------------------------------------------------------
# Bootstrap


class _RankedColumn:
    """One AUC column sorted by score once, so that any weighting of its samples is scored fast."""

    def __init__(self, positive: np.ndarray, score: np.ndarray) -> None:
        self.order = np.argsort(score, kind="stable")
        sorted_score = score[self.order]
        # Start of each run of tied scores in sorted order; ties count one half, as in roc_auc_score.
        self.tie_starts = np.flatnonzero(np.r_[True, sorted_score[1:] != sorted_score[:-1]])
        self.positive = positive[self.order].astype(np.float64)
        self.negative = 1.0 - self.positive


def _weighted_auc(column: _RankedColumn, weights: np.ndarray) -> np.ndarray:
    """Compute the Mann-Whitney AUC of one column under each row of sample weights.

    A bootstrap resample is the weighting that counts how often it draws each sample, so row b gives
    the AUC of resample b without sorting it again.

    Args:
        column: the column's ranking.
        weights: float (B, N), weights[b, i] = times resample b draws sample i.

    Returns:
        float (B,), NaN where a row weights no positive or no negative sample.
    """
    w = weights[:, column.order]
    w_pos = np.add.reduceat(w * column.positive, column.tie_starts, axis=1)  # (B, G) per tie group
    w_neg = np.add.reduceat(w * column.negative, column.tie_starts, axis=1)
    neg_below = np.cumsum(w_neg, axis=1) - w_neg
    u_statistic = np.sum(w_pos * (neg_below + 0.5 * w_neg), axis=1)
    pairs = w_pos.sum(axis=1) * w_neg.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(pairs > 0, u_statistic / np.where(pairs > 0, pairs, 1.0), np.nan)


def _mean_auc(columns: list[_RankedColumn], weights: np.ndarray) -> np.ndarray:
    """Return the mean AUC over columns for each weight row, float (B,), NaN where none is defined."""
    per_column = np.stack([_weighted_auc(c, weights) for c in columns], axis=1)  # (B, K)
    defined = ~np.isnan(per_column)
    count = defined.sum(axis=1)
    total = np.where(defined, per_column, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _resample_counts(rng: np.random.Generator, n_resamples: int, n: int) -> np.ndarray:
    """Draw n_resamples bootstrap resamples of n samples, as counts: float (n_resamples, n)."""
    indices = rng.integers(0, n, size=(n_resamples, n))
    offsets = (np.arange(n_resamples) * n)[:, None]
    counts = np.bincount((indices + offsets).ravel(), minlength=n_resamples * n)
    return counts.reshape(n_resamples, n).astype(np.float64)


def _bootstrap(
    statistic: Callable[[np.ndarray], np.ndarray], *, n: int, n_resamples: int, seed: int
) -> np.ndarray:
    """Evaluate a statistic on bootstrap resamples, redrawing the resamples where it is undefined.

    Args:
        statistic: maps counts (B, n) to values (B, S); a row whose first value is NaN is undefined.
        n: number of samples.
        n_resamples: number of defined resamples to return.
        seed: seed of the resampling generator.

    Returns:
        float (n_resamples, S).

    Raises:
        DataError: resamples stay undefined after ``_MAX_REDRAW_ROUNDS`` rounds of redrawing.
    """
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_ELEMENTS // n)
    accepted: list[np.ndarray] = []
    missing = n_resamples
    for _ in range(_MAX_REDRAW_ROUNDS):
        for start in range(0, missing, chunk):
            values = statistic(_resample_counts(rng, min(chunk, missing - start), n))
            accepted.append(values[~np.isnan(values[:, 0])])
        missing = n_resamples - sum(len(a) for a in accepted)
        if missing == 0:
            return np.concatenate(accepted, axis=0)
    raise DataError(
        f"{missing} of {n_resamples} bootstrap resamples still had an undefined AUC after {_MAX_REDRAW_ROUNDS} "
        f"rounds of redrawing, because positive or negative samples are too rare among the {n} samples. "
        "Use a larger evaluation split."
    )


def _percentile_interval(values: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [tail, 1.0 - tail])
    return float(low), float(high)


# ---------------------------------------------------------------------------------------------------
# Public functions


def auc(y_true: np.ndarray, y_score: np.ndarray, task: Task) -> AucResult:
    """Compute the ROC AUC of scores as MedMNIST reports it.

    Args:
        y_true: int (N, 1) class ids for binary, multi-class and ordinal tasks, or (N, L) of 0/1 for
            multi-label. Shape (N,) is accepted for single-label tasks.
        y_score: float (N, C) probabilities in [0, 1]: softmax for single-label tasks (C = 2 for
            binary), one sigmoid per label for multi-label (C = L).
        task: the dataset's task.

    Returns:
        The mean AUC over the classes or labels where it is defined, and the ones skipped.

    Raises:
        ConfigError: ``task`` is not a :class:`~lakeguard.tasks.Task`.
        DataError: the arrays have mismatched or wrong shapes, non-finite or out-of-range scores or
            labels outside the label set, or AUC is undefined for every class or label.

    Example:
        >>> import numpy as np
        >>> y = np.array([[0], [0], [1], [1]])
        >>> p = np.array([[0.9, 0.1], [0.6, 0.4], [0.65, 0.35], [0.2, 0.8]])
        >>> auc(y, p, Task.BINARY)
        AucResult(value=0.75, skipped_labels=())
    """
    labels, scores, task = _check_inputs(y_true, y_score, task)
    return _auc_point(labels, scores, task)


def accuracy(y_true: np.ndarray, y_score: np.ndarray, task: Task, *, threshold: float = 0.5) -> float:
    """Compute the accuracy of scores as MedMNIST reports it.

    Binary: ``y_score[:, -1] > threshold`` against y. Multi-class and ordinal: argmax against y.
    Multi-label: mean over all N x L entries of ``(y_score > threshold) == y_true``.

    Args:
        y_true: labels, as in :func:`auc`.
        y_score: probabilities, as in :func:`auc`.
        task: the dataset's task.
        threshold: decision threshold on probabilities in [0, 1]; unused by multi-class and ordinal.

    Returns:
        Accuracy, float in [0, 1].

    Raises:
        ConfigError: ``task`` or ``threshold`` is invalid.
        DataError: the arrays are invalid, as in :func:`auc`.
    """
    _check_threshold(threshold)
    labels, scores, task = _check_inputs(y_true, y_score, task)
    return float(_correct(labels, scores, task, threshold).mean())


def evaluate_scores(
    y_true: np.ndarray,
    y_score: np.ndarray,
    task: Task,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
    threshold: float = 0.5,
) -> UtilityReport:
    """Compute AUC and accuracy with percentile bootstrap intervals.

    Every resample draws N samples with replacement. A resample where AUC is undefined for every
    class or label is redrawn. Where only some are undefined, its AUC is the mean over the rest, as
    on the full set. Accuracy uses the same resamples.

    Args:
        y_true: labels, as in :func:`auc`.
        y_score: probabilities, as in :func:`auc`.
        task: the dataset's task.
        n_resamples: number of bootstrap resamples, positive.
        seed: seed of the resampling generator; equal seeds give equal intervals.
        confidence: coverage of the intervals, float in (0, 1).
        threshold: decision threshold of :func:`accuracy`.

    Returns:
        The report, with point estimates on the full set.

    Raises:
        ConfigError: ``task``, ``n_resamples``, ``seed``, ``confidence`` or ``threshold`` is invalid.
        DataError: the arrays are invalid, AUC is undefined for every class or label, or resamples
            with a defined AUC are too rare to draw.
    """
    _check_bootstrap_args(n_resamples, seed, confidence)
    _check_threshold(threshold)
    labels, scores, task = _check_inputs(y_true, y_score, task)
    n = labels.shape[0]

    point = _auc_point(labels, scores, task)
    correct = _correct(labels, scores, task, threshold)

    targets, column_scores, _ = _ovr_columns(labels, scores, task)
    columns = [_RankedColumn(targets[:, k], column_scores[:, k]) for k in np.flatnonzero(_defined_columns(targets))]

    def statistic(counts: np.ndarray) -> np.ndarray:
        return np.stack([_mean_auc(columns, counts), counts @ correct / n], axis=1)

    resampled = _bootstrap(statistic, n=n, n_resamples=n_resamples, seed=seed)
    return UtilityReport(
        auc=point.value,
        acc=float(correct.mean()),
        auc_ci=_percentile_interval(resampled[:, 0], confidence),
        acc_ci=_percentile_interval(resampled[:, 1], confidence),
        skipped_labels=point.skipped_labels,
        n=n,
        n_resamples=n_resamples,
        confidence=float(confidence),
    )


def paired_auc_difference(
    y_true: np.ndarray,
    score_a: np.ndarray,
    score_b: np.ndarray,
    task: Task,
    *,
    n_resamples: int = 1000,
    seed: int = 0,
    confidence: float = 0.95,
) -> PairedDifference:
    """Compute the AUC difference b - a of two models on one split, with a paired bootstrap interval.

    Both models are scored on the same resampled indices, so the interval reflects the difference
    between the models and not the spread of the split. In lakeguard, a is the trained model and b
    the sanitized one, so a negative delta is the AUC that sanitizing cost.

    Args:
        y_true: labels, as in :func:`auc`.
        score_a: probabilities of model a, as ``y_score`` in :func:`auc`.
        score_b: probabilities of model b, same shape as ``score_a``.
        task: the dataset's task.
        n_resamples: number of bootstrap resamples, positive.
        seed: seed of the resampling generator.
        confidence: coverage of the interval, float in (0, 1).

    Returns:
        The difference on the full set and its percentile bootstrap interval. Identical scores
        give exactly 0 with the interval (0, 0).

    Raises:
        ConfigError: ``task``, ``n_resamples``, ``seed`` or ``confidence`` is invalid.
        DataError: either score array is invalid, the two shapes differ, or AUC is undefined for
            every class or label.
    """
    _check_bootstrap_args(n_resamples, seed, confidence)
    labels, scores_a, task = _check_inputs(y_true, score_a, task, score_name="score_a")
    _, scores_b, _ = _check_inputs(y_true, score_b, task, score_name="score_b")
    if scores_a.shape != scores_b.shape:
        raise DataError(f"score_a and score_b must have the same shape; got {scores_a.shape} and {scores_b.shape}.")
    n = labels.shape[0]

    auc_a = _auc_point(labels, scores_a, task)
    auc_b = _auc_point(labels, scores_b, task, log_skipped=False)  # same labels, same skipped columns

    # Both models share y_true, so the same columns are defined for both in every resample.
    targets, columns_a, _ = _ovr_columns(labels, scores_a, task)
    _, columns_b, _ = _ovr_columns(labels, scores_b, task)
    defined = np.flatnonzero(_defined_columns(targets))
    ranked_a = [_RankedColumn(targets[:, k], columns_a[:, k]) for k in defined]
    ranked_b = [_RankedColumn(targets[:, k], columns_b[:, k]) for k in defined]

    def statistic(counts: np.ndarray) -> np.ndarray:
        return (_mean_auc(ranked_b, counts) - _mean_auc(ranked_a, counts))[:, None]

    resampled = _bootstrap(statistic, n=n, n_resamples=n_resamples, seed=seed)
    ci_low, ci_high = _percentile_interval(resampled[:, 0], confidence)
    return PairedDifference(
        delta=auc_b.value - auc_a.value,
        ci_low=ci_low,
        ci_high=ci_high,
        n_resamples=n_resamples,
        confidence=float(confidence),
        n=n,
        auc_a=auc_a.value,
        auc_b=auc_b.value,
    )
