"""Release-gate decision on a sanitized model, and the gate record that publishing verifies.

``evaluate`` measures the sanitized model (:class:`GateInputs`), :func:`decide` compares the
measurements with the effective policy, and :func:`build_record` / :func:`write_record` store the
outcome beside the model. Before anything is written to the registry, :func:`verify_record` checks
that the model file is the one evaluated, that the record was decided under thresholds at least as
strict as the policy in force, and that the stored measurements still pass.
"""

from __future__ import annotations

import json
import logging
import math
import numbers
import os
import re
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from lakeguard.errors import GateError, PolicyError
from lakeguard.gate._hashing import sha256_file
from lakeguard.gate.policy import Policy, check_not_looser, policy_from_mapping, strictest

_logger = logging.getLogger(__name__)

RECORD_SCHEMA = "lakeguard.gate-record/v1"
"""Value of the ``schema`` key of every gate record this module writes and reads."""

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")

# Unread tensor names quoted in a failure reason; the record's inputs keep the full list.
_MAX_NAMES_IN_REASON = 5


# ---------------------------------------------------------------------------------------------------
# Strict conversion helpers shared by the dataclasses below


def _check_exact_keys(data: Any, expected: Sequence[str], description: str) -> Mapping[str, Any]:
    if not isinstance(data, Mapping):
        raise GateError(f"{description} must be a JSON object; got {type(data).__name__}.")
    missing = [k for k in expected if k not in data]
    unknown = sorted(str(k) for k in data if k not in expected)
    if missing or unknown:
        raise GateError(
            f"{description} must have exactly the keys {list(expected)}; missing {missing}, unknown {unknown}."
        )
    return data


def _as_float(value: Any, field: str, *, optional: bool = False) -> float | None:
    """Convert a number to float, keeping NaN and infinity so that :func:`decide` can reject them."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        expected = "a number or null" if optional else "a number"
        raise GateError(f"{field} must be {expected}; got {value!r} ({type(value).__name__}).")
    return float(value)


def _format(value: float) -> str:
    return f"{value:.4g}"


# ---------------------------------------------------------------------------------------------------
# Gate inputs


@dataclass(frozen=True)
class LeakageEvidence:
    """Leakage measurements of the sanitized model, produced by the audit.

    Attributes:
        ssim: mean SSIM of the attack's reconstructions against their targets, in [-1, 1], or None
            when no reconstruction was scored.
        psnr: mean PSNR of those reconstructions in dB (infinity for exact copies), or None. It is
            recorded for reports; no threshold applies to it.
        baseline_ssim: SSIM of the fitted class-mean image against the same targets, in [-1, 1], or
            None. Only SSIM above this baseline plus the policy margin counts as leakage.
        reidentification_rate: fraction in [0, 1] of canary reconstructions whose nearest training
            image is their target, or None when no canary ground truth is available.
        probe_matches: distinct training images matched by target-free probes above baseline plus
            margin, >= 0.
        probe_baseline_ssim: the SSIM baseline the probes were matched against, or None. Recorded
            for reports.
        unread_tensors: names of tensors in the model file that the forward pass never reads.

    Raises:
        GateError: a field has the wrong type, or ``probe_matches`` is negative.
    """

    ssim: float | None
    psnr: float | None
    baseline_ssim: float | None
    reidentification_rate: float | None
    probe_matches: int
    probe_baseline_ssim: float | None
    unread_tensors: tuple[str, ...]

    def __post_init__(self) -> None:
        for name in ("ssim", "psnr", "baseline_ssim", "reidentification_rate", "probe_baseline_ssim"):
            object.__setattr__(self, name, _as_float(getattr(self, name), f"leakage.{name}", optional=True))

        if isinstance(self.probe_matches, bool) or not isinstance(self.probe_matches, numbers.Integral):
            raise GateError(f"leakage.probe_matches must be an integer; got {self.probe_matches!r}.")
        if self.probe_matches < 0:
            raise GateError(f"leakage.probe_matches must be >= 0; got {self.probe_matches}.")
        object.__setattr__(self, "probe_matches", int(self.probe_matches))

        names = self.unread_tensors
        if isinstance(names, str) or not isinstance(names, Sequence) or not all(isinstance(n, str) for n in names):
            raise GateError(f"leakage.unread_tensors must be a list of tensor names; got {names!r}.")
        object.__setattr__(self, "unread_tensors", tuple(names))

    def to_dict(self) -> dict[str, Any]:
        """Return the evidence as JSON-ready builtins."""
        return {
            "ssim": self.ssim,
            "psnr": self.psnr,
            "baseline_ssim": self.baseline_ssim,
            "reidentification_rate": self.reidentification_rate,
            "probe_matches": self.probe_matches,
            "probe_baseline_ssim": self.probe_baseline_ssim,
            "unread_tensors": list(self.unread_tensors),
        }

    @classmethod
    def from_dict(cls, data: Any) -> LeakageEvidence:
        """Build evidence from :meth:`to_dict` output.

        Raises:
            GateError: ``data`` lacks a key, has an unknown one, or has a value of the wrong type.
        """
        data = _check_exact_keys(data, _LEAKAGE_KEYS, "leakage evidence")
        return cls(**data)


_LEAKAGE_KEYS = (
    "ssim",
    "psnr",
    "baseline_ssim",
    "reidentification_rate",
    "probe_matches",
    "probe_baseline_ssim",
    "unread_tensors",
)


@dataclass(frozen=True)
class GateInputs:
    """Everything the gate decides on.

    Attributes:
        val_auc_delta: validation AUC of the sanitized model minus that of the trained model, paired
            on the same samples, in [-1, 1].
        val_auc_delta_ci: (low, high) paired bootstrap interval of ``val_auc_delta``.
        leakage: leakage measurements of the sanitized model.

    Raises:
        GateError: a field has the wrong type.
    """

    val_auc_delta: float
    val_auc_delta_ci: tuple[float, float]
    leakage: LeakageEvidence

    def __post_init__(self) -> None:
        object.__setattr__(self, "val_auc_delta", _as_float(self.val_auc_delta, "val_auc_delta"))
        ci = self.val_auc_delta_ci
        if isinstance(ci, str) or not isinstance(ci, Sequence) or len(ci) != 2:
            raise GateError(f"val_auc_delta_ci must be a (low, high) pair; got {ci!r}.")
        object.__setattr__(
            self, "val_auc_delta_ci", (_as_float(ci[0], "val_auc_delta_ci[0]"), _as_float(ci[1], "val_auc_delta_ci[1]"))
        )
        if not isinstance(self.leakage, LeakageEvidence):
            raise GateError(f"leakage must be a LeakageEvidence; got {type(self.leakage).__name__}.")

    def to_dict(self) -> dict[str, Any]:
        """Return the inputs as JSON-ready builtins."""
        return {
            "val_auc_delta": self.val_auc_delta,
            "val_auc_delta_ci": list(self.val_auc_delta_ci),
            "leakage": self.leakage.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: Any) -> GateInputs:
        """Build inputs from :meth:`to_dict` output.

        Raises:
            GateError: ``data`` lacks a key, has an unknown one, or has a value of the wrong type.
        """
        data = _check_exact_keys(data, ("val_auc_delta", "val_auc_delta_ci", "leakage"), "gate inputs")
        return cls(
            val_auc_delta=data["val_auc_delta"],
            val_auc_delta_ci=data["val_auc_delta_ci"],
            leakage=LeakageEvidence.from_dict(data["leakage"]),
        )


# ---------------------------------------------------------------------------------------------------
# Decision


@dataclass(frozen=True)
class GateDecision:
    """Outcome of the gate.

    Attributes:
        passed: True exactly when ``reasons`` is empty.
        reasons: one sentence per failed check, with the measured value and the threshold. Empty when
            the model passed.
        skipped_checks: one sentence per check that could not run because its evidence is absent
            (no SSIM baseline, no canary ground truth). A skipped check does not fail the gate.
    """

    passed: bool
    reasons: tuple[str, ...]
    skipped_checks: tuple[str, ...] = ()


def _nan_reasons(inputs: GateInputs) -> list[str]:
    leakage = inputs.leakage
    values = {
        "validation AUC delta": inputs.val_auc_delta,
        "validation AUC delta interval low": inputs.val_auc_delta_ci[0],
        "validation AUC delta interval high": inputs.val_auc_delta_ci[1],
        "reconstruction SSIM": leakage.ssim,
        "reconstruction PSNR": leakage.psnr,
        "baseline SSIM": leakage.baseline_ssim,
        "reidentification rate": leakage.reidentification_rate,
        "probe baseline SSIM": leakage.probe_baseline_ssim,
    }
    return [
        f"{name} is NaN; the gate never passes on NaN. Re-run the evaluation and check what produced it."
        for name, value in values.items()
        if value is not None and math.isnan(value)
    ]


def _range_reason(name: str, value: float | None, low: float, high: float) -> str | None:
    """Return a reason when a finite-range measurement lies outside [low, high] (NaN is reported elsewhere)."""
    if value is None or math.isnan(value) or low <= value <= high:
        return None
    return (
        f"{name} {_format(value)} is invalid; it must lie in [{_format(low)}, {_format(high)}]. "
        "Check the evaluation that produced it."
    )


def _check_utility(inputs: GateInputs, policy: Policy) -> list[str]:
    low, high = inputs.val_auc_delta_ci
    reasons = [
        r
        for r in (
            _range_reason("validation AUC delta", inputs.val_auc_delta, -1.0, 1.0),
            _range_reason("validation AUC delta interval low", low, -1.0, 1.0),
            _range_reason("validation AUC delta interval high", high, -1.0, 1.0),
        )
        if r
    ]
    if low > high:
        reasons.append(
            f"validation AUC delta interval ({_format(low)}, {_format(high)}) is invalid because its low end "
            "exceeds its high end."
        )

    if policy.auc_delta_statistic == "point":
        value, label = inputs.val_auc_delta, "paired difference"
    else:
        value, label = low, "lower bound of its bootstrap interval"
    if not math.isnan(value) and value < policy.min_val_auc_delta:
        reasons.append(
            f"validation AUC delta (sanitized minus trained, {label}) is {_format(value)}, below the minimum "
            f"{_format(policy.min_val_auc_delta)}; sanitizing cost too much utility."
        )
    return reasons


def _check_leakage(leakage: LeakageEvidence, policy: Policy) -> tuple[list[str], list[str]]:
    reasons = [
        r
        for r in (
            _range_reason("reconstruction SSIM", leakage.ssim, -1.0, 1.0),
            _range_reason("baseline SSIM", leakage.baseline_ssim, -1.0, 1.0),
            _range_reason("reidentification rate", leakage.reidentification_rate, 0.0, 1.0),
        )
        if r
    ]
    skipped = []

    if leakage.ssim is None or leakage.baseline_ssim is None:
        skipped.append(
            "reconstruction SSIM check skipped: the evidence has no reconstruction SSIM or no baseline SSIM."
        )
    else:
        limit = leakage.baseline_ssim + policy.leakage_margin_ssim
        if leakage.ssim > limit:
            reasons.append(
                f"reconstruction SSIM {_format(leakage.ssim)} exceeds the class-mean baseline "
                f"{_format(leakage.baseline_ssim)} plus margin {_format(policy.leakage_margin_ssim)} "
                f"(= {_format(limit)}); the model still leaks training images."
            )

    rate = leakage.reidentification_rate
    if rate is None:
        skipped.append("reidentification check skipped: no canary ground truth is available.")
    elif rate > policy.max_reidentification_rate:
        reasons.append(
            f"reidentification rate {_format(rate)} exceeds the maximum {_format(policy.max_reidentification_rate)}; "
            "canary reconstructions identify their training images."
        )

    if leakage.probe_matches > policy.max_probe_matches:
        reasons.append(
            f"{leakage.probe_matches} training images matched by target-free probes exceed the maximum "
            f"{policy.max_probe_matches}; the model reproduces training images without being given them."
        )

    if leakage.unread_tensors and not policy.allow_unread_tensors:
        names = ", ".join(leakage.unread_tensors[:_MAX_NAMES_IN_REASON])
        more = len(leakage.unread_tensors) - _MAX_NAMES_IN_REASON
        suffix = f" and {more} more" if more > 0 else ""
        reasons.append(
            f"model file has {len(leakage.unread_tensors)} tensors that the forward pass never reads "
            f"({names}{suffix}); "
            "they can carry a hidden payload and the policy does not allow them."
        )
    return reasons, skipped


def decide(inputs: GateInputs, policy: Policy) -> GateDecision:
    """Decide whether a sanitized model may be published.

    The model passes when every check holds:

    1. the AUC statistic chosen by ``policy.auc_delta_statistic`` (the paired difference or the lower
       end of its interval) is >= ``min_val_auc_delta``;
    2. with both present, ``ssim <= baseline_ssim + leakage_margin_ssim``;
    3. with canary ground truth, ``reidentification_rate <= max_reidentification_rate``;
    4. ``probe_matches <= max_probe_matches``;
    5. ``unread_tensors`` is empty, unless ``allow_unread_tensors``.

    A NaN in any measurement, or a measurement outside its range, fails the gate with its own reason.

    Args:
        inputs: measurements of the sanitized model.
        policy: the effective policy.

    Returns:
        The decision. ``reasons`` is empty when the model passed.
    """
    reasons = _nan_reasons(inputs)
    reasons += _check_utility(inputs, policy)
    leakage_reasons, skipped = _check_leakage(inputs.leakage, policy)
    reasons += leakage_reasons

    for line in skipped:
        _logger.warning("Gate %s", line)
    return GateDecision(passed=not reasons, reasons=tuple(reasons), skipped_checks=tuple(skipped))


# ---------------------------------------------------------------------------------------------------
# Record


@dataclass(frozen=True)
class GateRecord:
    """Stored outcome of the gate for one model file, checked again before publishing.

    Attributes:
        schema: always ``RECORD_SCHEMA``.
        model_sha256: lowercase hex SHA-256 of the sanitized model file that was evaluated.
        passed: the decision.
        reasons: the decision's failure reasons, empty when it passed.
        thresholds: ``Policy.to_dict()`` of the effective policy the decision used.
        policy_sha256: ``Policy.sha256()`` of that policy.
        inputs: the measurements the decision used.
        created_at: ISO-8601 time of the decision in UTC, e.g. "2025-01-31T12:00:00+00:00".
    """

    schema: str
    model_sha256: str
    passed: bool
    reasons: tuple[str, ...]
    thresholds: dict[str, Any]
    policy_sha256: str
    inputs: GateInputs
    created_at: str

    def to_dict(self) -> dict[str, Any]:
        """Return the record as JSON-ready builtins."""
        return {
            "schema": self.schema,
            "model_sha256": self.model_sha256,
            "passed": self.passed,
            "reasons": list(self.reasons),
            "thresholds": dict(self.thresholds),
            "policy_sha256": self.policy_sha256,
            "inputs": self.inputs.to_dict(),
            "created_at": self.created_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> GateRecord:
        """Build a record from :meth:`to_dict` output, checking every field.

        Raises:
            GateError: a key is missing or unknown, the schema is not ``RECORD_SCHEMA``, a value has
                the wrong type or form, the thresholds are not a valid policy or do not hash to
                ``policy_sha256``, or ``passed`` contradicts ``reasons``.
        """
        if isinstance(data, Mapping) and data.get("schema") != RECORD_SCHEMA:
            raise GateError(f"gate record schema is {data.get('schema')!r}; expected {RECORD_SCHEMA!r}.")
        data = _check_exact_keys(data, _RECORD_KEYS, "gate record")

        model_sha256 = data["model_sha256"]
        if not isinstance(model_sha256, str) or not _SHA256_HEX.fullmatch(model_sha256):
            raise GateError(f"gate record model_sha256 must be 64 lowercase hex digits; got {model_sha256!r}.")
        passed = data["passed"]
        if not isinstance(passed, bool):
            raise GateError(f"gate record passed must be true or false; got {passed!r}.")
        reasons = data["reasons"]
        if not isinstance(reasons, list) or not all(isinstance(r, str) for r in reasons):
            raise GateError(f"gate record reasons must be a list of strings; got {reasons!r}.")
        if passed == bool(reasons):
            raise GateError(
                f"gate record is inconsistent: passed={str(passed).lower()} with {len(reasons)} failure reasons."
            )

        try:
            policy = policy_from_mapping(data["thresholds"], source="gate record thresholds")
        except PolicyError as e:
            raise GateError(str(e)) from e
        if data["policy_sha256"] != policy.sha256():
            raise GateError(
                f"gate record policy_sha256 {data['policy_sha256']!r} does not match its thresholds "
                f"(sha256 {policy.sha256()}); "
                "the record was edited after the gate wrote it. Re-run evaluate."
            )

        return cls(
            schema=RECORD_SCHEMA,
            model_sha256=model_sha256,
            passed=passed,
            reasons=tuple(reasons),
            thresholds=policy.to_dict(),
            policy_sha256=data["policy_sha256"],
            inputs=GateInputs.from_dict(data["inputs"]),
            created_at=_check_created_at(data["created_at"]),
        )


_RECORD_KEYS = ("schema", "model_sha256", "passed", "reasons", "thresholds", "policy_sha256", "inputs", "created_at")


def _check_created_at(value: Any) -> str:
    try:
        moment = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        raise GateError(f"gate record created_at must be an ISO-8601 time; got {value!r}.") from None
    if moment.utcoffset() != timedelta(0):
        raise GateError(f"gate record created_at must be in UTC, e.g. '2025-01-31T12:00:00+00:00'; got {value!r}.")
    return value


def build_record(
    *, model_file: str | os.PathLike, inputs: GateInputs, policy: Policy, created_at: datetime | None = None
) -> GateRecord:
    """Decide on a sanitized model and build its gate record.

    Args:
        model_file: the sanitized model file; its SHA-256 binds the record to these exact bytes.
        inputs: measurements of that model.
        policy: the effective policy, after :func:`~lakeguard.gate.policy.tighten`.
        created_at: time of the decision, timezone-aware; defaults to now. It is stored in UTC.

    Returns:
        The record; ``record.passed`` and ``record.reasons`` hold the decision.

    Raises:
        GateError: the model file cannot be read, or ``created_at`` is naive.
    """
    if created_at is None:
        created_at = datetime.now(timezone.utc)
    if created_at.tzinfo is None:
        raise GateError(
            f"created_at must be timezone-aware; got naive {created_at.isoformat()}. "
            "Pass e.g. datetime.now(timezone.utc)."
        )
    try:
        model_sha256 = sha256_file(model_file)
    except OSError as e:
        raise GateError(f"model file {os.fspath(model_file)} cannot be read: {e}") from e

    decision = decide(inputs, policy)
    return GateRecord(
        schema=RECORD_SCHEMA,
        model_sha256=model_sha256,
        passed=decision.passed,
        reasons=decision.reasons,
        thresholds=policy.to_dict(),
        policy_sha256=policy.sha256(),
        inputs=inputs,
        created_at=created_at.astimezone(timezone.utc).isoformat(timespec="seconds"),
    )


def write_record(record: GateRecord, path: str | os.PathLike) -> None:
    """Write a gate record as JSON, atomically: a temporary file in the same folder, then os.replace.

    A reader therefore sees either the old record or the complete new one.

    NOTE: NaN and infinite measurements are written as the tokens NaN and Infinity, which Python's
    json module reads back but strict JSON parsers reject. PSNR is infinite for an exact copy.

    Args:
        record: the record.
        path: destination file; its folder must exist.

    Raises:
        OSError: the folder is missing or not writable. The temporary file is removed first.
    """
    path = Path(path)
    text = json.dumps(record.to_dict(), indent=2, sort_keys=True) + "\n"
    fd, temp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_name, path)
    except BaseException:
        Path(temp_name).unlink(missing_ok=True)
        raise
    _logger.info("Wrote gate record %s (passed=%s, model sha256 %s)", path, record.passed, record.model_sha256)


def read_record(path: str | os.PathLike) -> GateRecord:
    """Read and check a gate record written by :func:`write_record`.

    Args:
        path: the record file.

    Returns:
        The record.

    Raises:
        GateError: the file is missing or unreadable, is not JSON, or fails the checks of
            :meth:`GateRecord.from_dict`.
    """
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise GateError(f"gate record {os.fspath(path)} not found; run evaluate to create it.") from None
    except (OSError, UnicodeDecodeError) as e:
        raise GateError(f"gate record {os.fspath(path)} cannot be read: {e}") from e
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise GateError(f"gate record {os.fspath(path)} is not valid JSON ({e}); re-run evaluate to rewrite it.") from e
    try:
        return GateRecord.from_dict(data)
    except GateError as e:
        raise GateError(f"gate record {os.fspath(path)}: {e}") from e


def verify_record(record_path: str | os.PathLike, model_file: str | os.PathLike, policy: Policy) -> GateRecord:
    """Verify, before publishing, that a model file may be published under the policy in force.

    Steps:

    1. read and check the record;
    2. compare the SHA-256 of the model file with the record's;
    3. check that the record's thresholds are not looser than ``policy``;
    4. decide again on the stored inputs, under the stricter of both policies;
    5. check the stored decision.

    Args:
        record_path: the gate record written by evaluate.
        model_file: the model file about to be published.
        policy: the deployment's policy in force now.

    Returns:
        The verified record.

    Raises:
        GateError: any step fails; the message names the step and what to do.
    """
    record = read_record(record_path)

    try:
        actual_sha256 = sha256_file(model_file)
    except OSError as e:
        raise GateError(f"model file {os.fspath(model_file)} cannot be read: {e}") from e
    if actual_sha256 != record.model_sha256:
        raise GateError(
            f"model file sha256 {actual_sha256} does not match the gate record ({record.model_sha256}); "
            "the model changed after evaluation, re-run evaluate."
        )

    try:
        check_not_looser(record.thresholds, policy)
    except PolicyError as e:
        raise GateError(
            f"gate record {os.fspath(record_path)} does not meet the deployment policy: {e} "
            "Re-run evaluate under the current policy."
        ) from e

    effective = strictest(policy_from_mapping(record.thresholds, source="gate record thresholds"), policy)
    decision = decide(record.inputs, effective)
    if not decision.passed:
        raise GateError(
            f"gate record {os.fspath(record_path)} inputs fail the gate under the effective policy: "
            + " ".join(decision.reasons)
        )
    if not record.passed:
        raise GateError(
            f"gate record {os.fspath(record_path)} records that the model failed the gate: " + " ".join(record.reasons)
        )

    _logger.info(
        "Verified gate record %s for model sha256 %s (policy sha256 %s)",
        record_path,
        record.model_sha256,
        effective.sha256(),
    )
    return record
