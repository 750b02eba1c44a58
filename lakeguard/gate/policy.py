"""Release-gate policy: the thresholds a model must meet before it is published.

The policy belongs to the deployment, not to a run. It is a YAML file, usually a ConfigMap mounted
into the pod and named by the ``LAKEGUARD_POLICY_FILE`` environment variable; without it the
embedded ``default_policy.yaml`` applies. A run may tighten thresholds with :func:`tighten` but never
loosen them, and publishing re-checks with :func:`check_not_looser` that the thresholds a gate record
was decided under are at least as strict as the policy in force.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import numbers
import os
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

from lakeguard.errors import PolicyError

_logger = logging.getLogger(__name__)

POLICY_ENV_VAR = "LAKEGUARD_POLICY_FILE"
"""Environment variable naming the deployment's policy file."""

AUC_DELTA_STATISTICS = ("point", "lower_bound")
"""Values of ``auc_delta_statistic``, from loosest to strictest."""

_DEFAULT_POLICY_RESOURCE = "default_policy.yaml"

_CHANGE_POLICY_HINT = "Remove the override or ask the policy owner to change the policy file."


@dataclass(frozen=True)
class Policy:
    """Thresholds of the release gate. Every field is validated on construction.

    Attributes:
        min_val_auc_delta: minimum of sanitized minus trained validation AUC, paired, float in [-1, 1].
        auc_delta_statistic: "point" gates on the paired difference, "lower_bound" on the lower end of
            its bootstrap interval (stricter).
        leakage_margin_ssim: SSIM margin above the fitted class-mean baseline beyond which a
            reconstruction counts as leakage, float in [0, 2].
        max_reidentification_rate: maximum fraction of canary reconstructions whose nearest training
            image is their target, float in [0, 1].
        max_probe_matches: maximum count of distinct training images matched by target-free probes
            above baseline plus margin, int >= 0.
        allow_unread_tensors: whether the model file may contain tensors that the forward pass never
            reads (a place to hide a payload).
        bootstrap_resamples: resamples of every bootstrap interval, int >= 100.

    Raises:
        PolicyError: a field has the wrong type or lies out of range.
    """

    min_val_auc_delta: float
    auc_delta_statistic: str
    leakage_margin_ssim: float
    max_reidentification_rate: float
    max_probe_matches: int
    allow_unread_tensors: bool
    bootstrap_resamples: int

    def __post_init__(self) -> None:
        for key in _FIELDS:
            object.__setattr__(self, key, _FIELDS[key].validate(key, getattr(self, key)))

    def to_dict(self) -> dict[str, Any]:
        """Return the thresholds as a dict of JSON-ready builtins."""
        return dataclasses.asdict(self)

    def sha256(self) -> str:
        """Return the hex SHA-256 of the canonical JSON of the thresholds (sorted keys, no spaces)."""
        return hashlib.sha256(canonical_json(self.to_dict()).encode("utf-8")).hexdigest()


def canonical_json(data: Mapping[str, Any]) -> str:
    """Return ``data`` as JSON with sorted keys and no whitespace, the form that is hashed."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), allow_nan=False)


# ---------------------------------------------------------------------------------------------------
# Per-key validation and strictness


def _format(value: Any) -> str:
    """Format a threshold as the policy file writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    return repr(value)


def _type_error(key: str, value: Any, expected: str) -> PolicyError:
    hint = ""
    if isinstance(value, str):
        try:
            float(value)
            hint = " YAML read it as a string: write floats with a dot, e.g. 1.0e-3 instead of 1e-3."
        except ValueError:
            pass
    return PolicyError(f"policy key {key!r} must be {expected}; got {value!r} ({type(value).__name__}).{hint}")


def _float_validator(low: float, high: float, fix: str) -> Callable[[str, Any], float]:
    def validate(key: str, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise _type_error(key, value, "a number (not a boolean)")
        value = float(value)
        if not (low <= value <= high):  # also rejects NaN
            raise PolicyError(f"policy key {key!r} must lie in [{low:g}, {high:g}]; got {_format(value)}. {fix}")
        return value

    return validate


def _int_validator(low: int, fix: str) -> Callable[[str, Any], int]:
    def validate(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise _type_error(key, value, "an integer (not a boolean)")
        value = int(value)
        if value < low:
            raise PolicyError(f"policy key {key!r} must be >= {low}; got {value}. {fix}")
        return value

    return validate


def _validate_bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _type_error(key, value, "true or false")
    return value


def _validate_statistic(key: str, value: Any) -> str:
    if value not in AUC_DELTA_STATISTICS:
        raise PolicyError(f"policy key {key!r} must be one of {list(AUC_DELTA_STATISTICS)}; got {value!r}.")
    return value


@dataclass(frozen=True)
class _FieldRule:
    """Validation and ordering of one threshold.

    ``strictness`` maps a valid value to a number that grows as the threshold gets stricter.
    """

    validate: Callable[[str, Any], Any]
    strictness: Callable[[Any], float]


_FIELDS: dict[str, _FieldRule] = {
    "min_val_auc_delta": _FieldRule(
        _float_validator(-1.0, 1.0, "It is an AUC difference, e.g. -0.02 to allow a drop of 0.02."),
        strictness=lambda v: v,
    ),
    "auc_delta_statistic": _FieldRule(_validate_statistic, strictness=AUC_DELTA_STATISTICS.index),
    "leakage_margin_ssim": _FieldRule(
        _float_validator(0.0, 2.0, "It is an SSIM difference, e.g. 0.05."),
        strictness=lambda v: -v,
    ),
    "max_reidentification_rate": _FieldRule(
        _float_validator(0.0, 1.0, "It is a fraction, e.g. 0.01 for 1%."),
        strictness=lambda v: -v,
    ),
    "max_probe_matches": _FieldRule(_int_validator(0, "It counts training images, e.g. 0."), strictness=lambda v: -v),
    "allow_unread_tensors": _FieldRule(_validate_bool, strictness=lambda v: 0.0 if v else 1.0),
    "bootstrap_resamples": _FieldRule(
        _int_validator(100, "Fewer resamples make the interval ends unstable; use e.g. 1000."),
        strictness=lambda v: v,
    ),
}

assert set(_FIELDS) == {f.name for f in dataclasses.fields(Policy)}, "every Policy field needs a rule"


def _is_looser(key: str, candidate: Any, reference: Any) -> bool:
    rule = _FIELDS[key]
    return rule.strictness(candidate) < rule.strictness(reference)


def _check_keys(data: Mapping[str, Any], source: str) -> None:
    expected = list(_FIELDS)
    unknown = sorted(str(k) for k in data if k not in _FIELDS)
    if unknown:
        raise PolicyError(
            f"{source} has unknown keys {unknown}; expected only {expected}. Remove them or fix their spelling."
        )
    missing = [k for k in expected if k not in data]
    if missing:
        raise PolicyError(
            f"{source} is missing keys {missing}; every key is required. "
            f"Add them; the embedded {_DEFAULT_POLICY_RESOURCE} documents each key with its default."
        )


def policy_from_mapping(data: Any, *, source: str = "policy") -> Policy:
    """Build a policy from a mapping with exactly the policy keys.

    Args:
        data: the parsed policy file or a gate record's thresholds.
        source: what ``data`` came from, for error messages.

    Returns:
        The validated policy.

    Raises:
        PolicyError: ``data`` is not a mapping, has unknown or missing keys, or an invalid value.
    """
    if not isinstance(data, Mapping):
        raise PolicyError(f"{source} must be a mapping of policy keys to values; got {type(data).__name__}.")
    _check_keys(data, source)
    try:
        return Policy(**{key: data[key] for key in _FIELDS})
    except PolicyError as e:
        raise PolicyError(f"{source}: {e}") from None


# ---------------------------------------------------------------------------------------------------
# Loading


class _UniqueKeyLoader(yaml.SafeLoader):
    """Safe YAML loader that rejects duplicate keys, which PyYAML would otherwise resolve silently."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                line = key_node.start_mark.line + 1
                raise PolicyError(f"duplicate policy key {key!r} at line {line}; keep one of them.")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_policy_text(text: str, source: str) -> Policy:
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except PolicyError as e:
        raise PolicyError(f"{source}: {e}") from None
    except yaml.YAMLError as e:
        raise PolicyError(f"{source} is not valid YAML: {e}") from e
    if data is None:
        raise PolicyError(f"{source} is empty; it must map every policy key to a value.")
    return policy_from_mapping(data, source=source)


def load_policy(path: str | os.PathLike | None = None) -> Policy:
    """Load the gate policy of the deployment.

    Args:
        path: the policy YAML file. None reads the file named by ``LAKEGUARD_POLICY_FILE`` if that
            variable is set, else the embedded default policy.

    Returns:
        The validated policy.

    Raises:
        PolicyError: the file is missing, unreadable or not valid YAML. It has duplicate, unknown or
            missing keys, or a value of the wrong type or out of range. ``LAKEGUARD_POLICY_FILE``
            is set but empty.

    Example:
        >>> load_policy().max_probe_matches
        0
    """
    if path is None:
        from_env = os.environ.get(POLICY_ENV_VAR)
        if from_env is not None and not from_env.strip():
            raise PolicyError(
                f"{POLICY_ENV_VAR} is set but empty; set it to the policy file path "
                "or unset it to use the embedded default policy."
            )
        path = from_env

    if path is None:
        source = f"embedded default policy {_DEFAULT_POLICY_RESOURCE}"
        text = resources.files(__package__).joinpath(_DEFAULT_POLICY_RESOURCE).read_text(encoding="utf-8")
    else:
        source = f"policy file {os.fspath(path)}"
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise PolicyError(
                f"policy file {os.fspath(path)} not found; mount the policy file there or point {POLICY_ENV_VAR} at it."
            ) from None
        except (OSError, UnicodeDecodeError) as e:
            raise PolicyError(f"policy file {os.fspath(path)} cannot be read: {e}") from e

    policy = _parse_policy_text(text, source)
    _logger.info("Loaded gate policy from %s (sha256 %s)", source, policy.sha256())
    return policy


# ---------------------------------------------------------------------------------------------------
# Tightening and comparison


def tighten(policy: Policy, overrides: Mapping[str, Any] | None) -> Policy:
    """Apply a run's threshold overrides, each of which must be at least as strict as the policy.

    Stricter means: ``min_val_auc_delta`` and ``bootstrap_resamples`` higher;
    ``auc_delta_statistic`` from point to lower_bound; ``leakage_margin_ssim``,
    ``max_reidentification_rate`` and ``max_probe_matches`` lower; ``allow_unread_tensors`` from
    true to false. An override equal to the policy is accepted.

    Args:
        policy: the deployment's policy.
        overrides: threshold keys to new values; None values and a None mapping are ignored.

    Returns:
        The effective policy of the run.

    Raises:
        PolicyError: an override has an unknown key, an invalid value, or loosens the policy.
    """
    if overrides is None:
        return policy
    if not isinstance(overrides, Mapping):
        raise PolicyError(f"run overrides must be a mapping of policy keys to values; got {type(overrides).__name__}.")

    changes: dict[str, Any] = {}
    for key, value in overrides.items():
        if value is None:
            continue
        if key not in _FIELDS:
            raise PolicyError(
                f"run override {key!r} is not a policy key; expected one of {list(_FIELDS)}. "
                "Remove it or fix its spelling."
            )
        try:
            value = _FIELDS[key].validate(key, value)
        except PolicyError as e:
            raise PolicyError(f"run override: {e}") from None
        current = getattr(policy, key)
        if _is_looser(key, value, current):
            raise PolicyError(
                f"run override {key}={_format(value)} loosens the deployment policy ({_format(current)}); "
                f"a run may only tighten thresholds. {_CHANGE_POLICY_HINT}"
            )
        changes[key] = value

    if changes:
        _logger.info("Run tightens the gate policy: %s", ", ".join(f"{k}={_format(v)}" for k, v in changes.items()))
    return dataclasses.replace(policy, **changes)


def check_not_looser(effective: Mapping[str, Any], policy: Policy) -> None:
    """Check that thresholds, e.g. those stored in a gate record, are at least as strict as the policy.

    Args:
        effective: every policy key mapped to the threshold that was applied.
        policy: the deployment's policy in force now.

    Raises:
        PolicyError: ``effective`` has unknown or missing keys or invalid values, or at least one of
            its thresholds is looser than the policy (all of them are listed).
    """
    applied = policy_from_mapping(effective, source="effective thresholds")
    looser = [
        f"{key}={_format(getattr(applied, key))} (policy: {_format(getattr(policy, key))})"
        for key in _FIELDS
        if _is_looser(key, getattr(applied, key), getattr(policy, key))
    ]
    if looser:
        raise PolicyError(f"thresholds looser than the deployment policy: {', '.join(looser)}.")


def strictest(first: Policy, second: Policy) -> Policy:
    """Return the policy that takes, for each threshold, the stricter of two policies."""
    values = {}
    for key in _FIELDS:
        a, b = getattr(first, key), getattr(second, key)
        values[key] = b if _is_looser(key, a, b) else a
    return Policy(**values)
