"""Prometheus metrics of one lakeguard run, written as a text file or pushed to a Pushgateway.

Every metric lives in a :class:`~prometheus_client.CollectorRegistry` owned by the run (injected or
created fresh), never in the process-wide default registry, so two runs in one process cannot mix
their series. Names follow the Prometheus conventions enforced by prometheus_client: a unit suffix
(``_seconds``, ``_ratio``), ``_total`` for counters and ``_info`` for run metadata.

Series that have not been recorded are absent rather than 0. For example, ``lakeguard_gate_passed``
does not appear before the gate has run, so an aborted run is never read as a failed gate.

The text file is meant for the node_exporter textfile collector, which reads only files ending in
``.prom``. Pushing is opt-in and has no default target.
"""

import logging
import math
import numbers
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Counter, Gauge, Info, push_to_gateway, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

_logger = logging.getLogger(__name__)

# Model states that the leakage and utility metrics describe: as trained, and after sanitizing.
STAGES = ("trained", "sanitized")
# MedMNIST split names.
SPLITS = ("train", "val", "test")

# Seconds before a push is aborted. prometheus_client 0.26 defaults to 30 s, but a gateway that has
# not responded in 10 s should not hold up a batch run whose results are already in the text file.
DEFAULT_PUSH_TIMEOUT_S = 10.0

_METRIC_NAME_PATTERN = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_LABEL_NAME_PATTERN = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_STEP_PATTERN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")


class RunMetrics:
    """Gauges and counters of one audit, sanitize and gate run.

    Args:
        registry: Registry that receives the metrics. ``None`` creates a fresh one. The
            process-wide ``prometheus_client.REGISTRY`` is never used implicitly.
        namespace: Prefix of every metric name, as in ``lakeguard_leakage_ssim``.

    Raises:
        ValueError: If ``namespace`` is not a valid metric name prefix, or ``registry`` already contains
            metrics with the same names.

    Example:
        >>> metrics = RunMetrics()
        >>> metrics.record_gate(passed=True, failed_checks=0, val_auc_delta=-0.01)
        >>> metrics.registry.get_sample_value("lakeguard_gate_passed")
        1.0
    """

    def __init__(self, *, registry: CollectorRegistry | None = None, namespace: str = "lakeguard") -> None:
        if not isinstance(namespace, str) or _METRIC_NAME_PATTERN.fullmatch(namespace) is None:
            raise ValueError(f"namespace must match [a-zA-Z_][a-zA-Z0-9_]*, got {namespace!r}")
        if registry is not None and not isinstance(registry, CollectorRegistry):
            raise TypeError(
                f"registry must be a prometheus_client CollectorRegistry, got {type(registry).__name__}"
            )
        self.registry = registry if registry is not None else CollectorRegistry()
        self.namespace = namespace

        def labelled_gauge(name: str, documentation: str, labelnames: tuple[str, ...]) -> Gauge:
            # A labelled gauge exposes no sample until a child is set, so it is registered at once.
            return Gauge(name, documentation, labelnames, namespace=namespace, registry=self.registry)

        self._step_duration = labelled_gauge(
            "step_duration_seconds",
            "Wall-clock duration of the last run of a pipeline step, in seconds.",
            ("step",),
        )
        self._leakage_ssim = labelled_gauge(
            "leakage_ssim",
            "SSIM of the attack's reconstructions against the training images, in [-1, 1].",
            ("stage",),
        )
        self._leakage_baseline_ssim = labelled_gauge(
            "leakage_baseline_ssim",
            "Reference SSIM that leakage_ssim is compared with, in [-1, 1].",
            ("stage",),
        )
        self._reidentification_ratio = labelled_gauge(
            "reidentification_ratio",
            "Fraction of reconstructions re-identified as a training image, in [0, 1].",
            ("stage",),
        )
        self._probe_matches = labelled_gauge(
            "probe_matches", "Number of probe matches found by the re-identification check.", ("stage",)
        )
        self._utility_auc = labelled_gauge(
            "utility_auc", "ROC AUC of the model on a data split, in [0, 1].", ("stage", "split")
        )
        self._utility_accuracy = labelled_gauge(
            "utility_accuracy", "Accuracy of the model on a data split, in [0, 1].", ("stage", "split")
        )
        # 0 is a true value before anything is published, so the counter is registered at once.
        self._published = Counter(
            "published", "Model versions published to the registry.", namespace=namespace, registry=self.registry
        )

        # Unlabelled metrics would expose 0 (or an empty info) as soon as they are registered, so
        # they are created unregistered and registered by the first record call.
        def unregistered_gauge(name: str, documentation: str) -> Gauge:
            return Gauge(name, documentation, namespace=namespace, registry=None)

        self._val_auc_delta = unregistered_gauge(
            "val_auc_delta", "Validation AUC after sanitizing minus before, in [-1, 1]."
        )
        self._gate_passed = unregistered_gauge(
            "gate_passed", "1 if the model passed the release gate, 0 if it failed."
        )
        self._gate_failed_checks = unregistered_gauge(
            "gate_failed_checks", "Number of release gate checks that failed."
        )
        self._run_info = Info(
            "run", "Dataset, model, attack and sanitize method of the run.", namespace=namespace, registry=None
        )
        self._registered: set[object] = set()

    @contextmanager
    def time_step(self, step: str) -> Iterator[None]:
        """Time a pipeline step and set ``lakeguard_step_duration_seconds{step}``.

        The gauge is set when the block exits, also when it raises, so a failed step still reports
        how long it ran.

        Args:
            step: Step name, 1 to 64 characters from ``[A-Za-z0-9_.-]`` starting with a letter.

        Yields:
            None.

        Raises:
            ValueError: If ``step`` is not a valid step name.
        """
        if not isinstance(step, str) or _STEP_PATTERN.fullmatch(step) is None:
            raise ValueError(
                f"step must be 1-64 characters from [A-Za-z0-9_.-] starting with a letter, got {step!r}"
            )
        timer = self._step_duration.labels(step=step).time()
        try:
            with timer:
                yield
        finally:
            _logger.info("step %s took %.3f s", step, timer.duration)

    def record_step_duration(self, step: str, seconds: float) -> None:
        """Set ``lakeguard_step_duration_seconds{step}`` from a duration measured elsewhere.

        Pipeline steps run in their own processes and report their durations in their outputs;
        this records them in the run's metrics.

        Raises:
            ValueError: If ``step`` is not a valid step name or ``seconds`` is negative or not finite.
        """
        if not isinstance(step, str) or _STEP_PATTERN.fullmatch(step) is None:
            raise ValueError(
                f"step must be 1-64 characters from [A-Za-z0-9_.-] starting with a letter, got {step!r}"
            )
        value = _check_real("seconds", seconds, 0.0, math.inf)
        if value is None:
            raise ValueError("seconds must be a finite number >= 0, got None")
        self._step_duration.labels(step=step).set(value)

    def record_leakage(
        self,
        stage: str,
        *,
        ssim: float | None,
        baseline_ssim: float | None,
        reidentification_rate: float | None,
        probe_matches: int | None,
    ) -> None:
        """Set the leakage gauges of one stage. A ``None`` value leaves its series absent.

        Args:
            stage: ``"trained"`` or ``"sanitized"``.
            ssim: SSIM of the reconstructions against the training images, in [-1, 1].
            baseline_ssim: Reference SSIM that ``ssim`` is compared with, in [-1, 1].
            reidentification_rate: Fraction of reconstructions re-identified, in [0, 1].
            probe_matches: Number of probe matches, an integer >= 0.

        Raises:
            ValueError: If ``stage`` is unknown or a value is out of range or not finite.
            TypeError: If a value is not a number.
        """
        _check_choice("stage", stage, STAGES)
        values = {
            self._leakage_ssim: _check_real("ssim", ssim, -1.0, 1.0),
            self._leakage_baseline_ssim: _check_real("baseline_ssim", baseline_ssim, -1.0, 1.0),
            self._reidentification_ratio: _check_real("reidentification_rate", reidentification_rate, 0.0, 1.0),
            self._probe_matches: _check_count("probe_matches", probe_matches),
        }

        for gauge, value in values.items():
            if value is not None:
                gauge.labels(stage=stage).set(value)

    def record_utility(self, stage: str, split: str, *, auc: float | None, acc: float | None) -> None:
        """Set the utility gauges of one stage and split. A ``None`` value leaves its series absent.

        Args:
            stage: ``"trained"`` or ``"sanitized"``.
            split: ``"train"``, ``"val"`` or ``"test"``.
            auc: ROC AUC in [0, 1], or ``None`` when it is undefined, e.g. a split with one class.
            acc: Accuracy in [0, 1].

        Raises:
            ValueError: If ``stage`` or ``split`` is unknown or a value is out of [0, 1] or not finite.
            TypeError: If a value is not a number.
        """
        _check_choice("stage", stage, STAGES)
        _check_choice("split", split, SPLITS)
        auc = _check_real("auc", auc, 0.0, 1.0)
        acc = _check_real("acc", acc, 0.0, 1.0)

        if auc is not None:
            self._utility_auc.labels(stage=stage, split=split).set(auc)
        if acc is not None:
            self._utility_accuracy.labels(stage=stage, split=split).set(acc)

    def record_gate(self, *, passed: bool, failed_checks: int, val_auc_delta: float | None) -> None:
        """Set the release gate result.

        Args:
            passed: Whether the model passed the gate.
            failed_checks: Number of failed gate checks, an integer >= 0. It must be 0 when ``passed``.
            val_auc_delta: Validation AUC after sanitizing minus before, in [-1, 1]. ``None`` leaves
                ``lakeguard_val_auc_delta`` absent.

        Raises:
            TypeError: If ``passed`` is not a bool or a number has the wrong type.
            ValueError: If a value is out of range, or ``passed`` is True with failed checks.
        """
        if not isinstance(passed, bool):
            raise TypeError(f"passed must be a bool, got {type(passed).__name__} {passed!r}")
        failed_checks = _check_count("failed_checks", failed_checks, allow_none=False)
        val_auc_delta = _check_real("val_auc_delta", val_auc_delta, -1.0, 1.0)
        if passed and failed_checks > 0:
            raise ValueError(
                f"a passed gate has no failed checks, got passed=True and failed_checks={failed_checks}"
            )

        self._register(self._gate_passed).set(1 if passed else 0)
        self._register(self._gate_failed_checks).set(failed_checks)
        if val_auc_delta is not None:
            self._register(self._val_auc_delta).set(val_auc_delta)

    def record_published(self) -> None:
        """Count one model version published to the registry."""
        self._published.inc()

    def record_run_info(self, *, dataset: str, model: str, attack: str, sanitize: str) -> None:
        """Set ``lakeguard_run_info{dataset,model,attack,sanitize} 1``.

        Args:
            dataset: Dataset name, e.g. ``"pneumoniamnist"``.
            model: Model architecture name.
            attack: Attack name.
            sanitize: Sanitize method name, e.g. ``"layer_decay"`` or ``"none"``.

        Raises:
            ValueError: If a value is not a non-empty string.
        """
        labels = {"dataset": dataset, "model": model, "attack": attack, "sanitize": sanitize}
        for name, value in labels.items():
            if not isinstance(value, str) or not value:
                raise ValueError(f"{name} must be a non-empty string, got {value!r}")

        self._register(self._run_info).info(labels)

    def write_textfile(self, path: str | os.PathLike[str]) -> Path:
        """Write all metrics in the Prometheus text format, replacing ``path`` atomically.

        prometheus_client writes a temporary file beside ``path`` and renames it, so a reader sees
        the old file or the new one, never a partial one. Missing parent folders are created.

        Args:
            path: Output file. The node_exporter textfile collector reads only names ending in
                ``.prom``.

        Returns:
            The path written.

        Raises:
            OSError: If the folder cannot be created or the file cannot be written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_to_textfile(os.fspath(path), self.registry)
        _logger.info("wrote metrics to %s", path)
        return path

    def push(
        self,
        gateway_url: str,
        *,
        job: str = "lakeguard",
        grouping_key: Mapping[str, str],
        timeout_s: float = DEFAULT_PUSH_TIMEOUT_S,
    ) -> None:
        """Push all metrics to a Prometheus Pushgateway with HTTP PUT.

        PUT replaces every metric stored under the same ``job`` and ``grouping_key``, so each run
        needs its own grouping key (e.g. ``{"run_id": ...}``). Nothing calls this by default.

        Args:
            gateway_url: Pushgateway base URL with an explicit ``http://`` or ``https://`` scheme.
            job: Value of the ``job`` grouping label.
            grouping_key: Further grouping labels, at least one, e.g. ``{"run_id": "2025-01-31-a"}``.
            timeout_s: Seconds before the request is aborted, > 0. Defaults to
                :data:`DEFAULT_PUSH_TIMEOUT_S` (10 s) rather than prometheus_client's 30 s.

        Raises:
            ValueError: If the URL, job, grouping key or timeout is invalid.
            urllib.error.URLError: If the gateway cannot be reached, the request times out, or the
                gateway responds with an HTTP error status.
        """
        parts = urlsplit(gateway_url) if isinstance(gateway_url, str) else None
        if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"gateway_url must be an http:// or https:// URL with a host, got {gateway_url!r}")
        if not isinstance(job, str) or not job:
            raise ValueError(f"job must be a non-empty string, got {job!r}")
        if not isinstance(grouping_key, Mapping) or not grouping_key:
            raise ValueError(
                f"grouping_key must be a non-empty mapping such as {{'run_id': ...}}, got {grouping_key!r}. "
                "Without one, every run overwrites the metrics of the previous one"
            )
        for name, value in grouping_key.items():
            if not isinstance(name, str) or _LABEL_NAME_PATTERN.fullmatch(name) is None or name == "job":
                raise ValueError(f"grouping_key label {name!r} must match [a-zA-Z_][a-zA-Z0-9_]* and not be 'job'")
            if not isinstance(value, str) or not value:
                raise ValueError(f"grouping_key value of {name!r} must be a non-empty string, got {value!r}")
        timeout_s = _check_real("timeout_s", timeout_s, 0.0, math.inf)
        if timeout_s is None or timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0 seconds, got {timeout_s!r}")

        # The URL may carry credentials, so only scheme, host and port are logged.
        target = f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        _logger.info("pushing metrics to %s job=%s grouping_key=%s", target, job, dict(grouping_key))
        push_to_gateway(
            gateway_url, job=job, registry=self.registry, grouping_key=dict(grouping_key), timeout=timeout_s
        )

    def _register(self, metric: Gauge | Info) -> Gauge | Info:
        """Register an unlabelled metric in the run registry on its first use, and return it."""
        if metric not in self._registered:
            self.registry.register(metric)
            self._registered.add(metric)
        return metric


def load_textfile_metrics(path: str | os.PathLike[str]) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Parse a Prometheus text-format file into a flat map of samples.

    Args:
        path: A file written by :meth:`RunMetrics.write_textfile` or any exporter.

    Returns:
        ``{(sample_name, frozenset(labels.items())): value}``, e.g.
        ``{("lakeguard_leakage_ssim", frozenset({("stage", "trained")})): 0.83}``. A counter
        contributes its ``_total`` and ``_created`` samples.

    Raises:
        OSError: If the file cannot be read.
        ValueError: If the file is not valid Prometheus text format.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    samples = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    except ValueError as error:
        raise ValueError(f"{path} is not valid Prometheus text format: {error}") from error
    return samples


def _check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {list(choices)}, got {value!r}")


def _check_real(name: str, value: object, low: float, high: float) -> float | None:
    """Return ``value`` as a float after checking it is finite and in [low, high]; pass None through."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number or None, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {value!r}")
    return value


def _check_count(name: str, value: object, *, allow_none: bool = True) -> int | None:
    """Return ``value`` as an int after checking it is an integer >= 0; pass None through if allowed."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__} {value!r}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return int(value)
