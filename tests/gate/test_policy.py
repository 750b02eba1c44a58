import dataclasses
import hashlib
import json
from importlib import resources

import pytest
import yaml

from lakeguard.errors import PolicyError
from lakeguard.gate import POLICY_ENV_VAR, Policy, check_not_looser, load_policy, strictest, tighten

DEFAULTS = {
    "min_val_auc_delta": -0.02,
    "auc_delta_statistic": "point",
    "leakage_margin_ssim": 0.05,
    "max_reidentification_rate": 0.01,
    "max_probe_matches": 0,
    "allow_unread_tensors": False,
    "bootstrap_resamples": 1000,
}

# A policy with room to loosen and to tighten every threshold.
MIDDLE = {
    "min_val_auc_delta": -0.05,
    "auc_delta_statistic": "point",
    "leakage_margin_ssim": 0.1,
    "max_reidentification_rate": 0.05,
    "max_probe_matches": 3,
    "allow_unread_tensors": True,
    "bootstrap_resamples": 500,
}


@pytest.fixture(autouse=True)
def _no_policy_env(monkeypatch):
    monkeypatch.delenv(POLICY_ENV_VAR, raising=False)


def _write_policy(tmp_path, data, name="policy.yaml"):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data))
    return path


# ---------------------------------------------------------------------------------------------------
# Loading


def test_default_policy_has_documented_values():
    assert load_policy().to_dict() == DEFAULTS


def test_default_policy_comments_every_key():
    text = resources.files("lakeguard.gate").joinpath("default_policy.yaml").read_text()
    lines = text.splitlines()
    for key in DEFAULTS:
        index = next(i for i, line in enumerate(lines) if line.startswith(f"{key}:"))
        assert lines[index - 1].startswith("#"), f"{key} has no comment above it"


def test_load_policy_from_path(tmp_path):
    path = _write_policy(tmp_path, MIDDLE)
    assert load_policy(path).to_dict() == MIDDLE
    assert load_policy(str(path)).to_dict() == MIDDLE


def test_load_policy_from_env(tmp_path, monkeypatch):
    monkeypatch.setenv(POLICY_ENV_VAR, str(_write_policy(tmp_path, MIDDLE)))
    assert load_policy().to_dict() == MIDDLE


def test_load_policy_rejects_empty_env(monkeypatch):
    monkeypatch.setenv(POLICY_ENV_VAR, "")
    with pytest.raises(PolicyError, match=f"{POLICY_ENV_VAR} is set but empty"):
        load_policy()


def test_load_policy_missing_file_names_path(tmp_path):
    path = tmp_path / "absent.yaml"
    with pytest.raises(PolicyError, match=f"policy file {path} not found"):
        load_policy(path)


def test_policy_accepts_int_for_float():
    policy = Policy(**{**DEFAULTS, "leakage_margin_ssim": 0})
    assert policy.leakage_margin_ssim == 0.0
    assert isinstance(policy.leakage_margin_ssim, float)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"max_probe_matchs": 0}, r"unknown keys \['max_probe_matchs'\].*fix their spelling"),
        ({"bootstrap_resamples": None}, r"'bootstrap_resamples' must be an integer.*got None"),
        ({"max_reidentification_rate": True}, r"'max_reidentification_rate' must be a number \(not a boolean\); got True"),
        ({"max_probe_matches": 1.0}, r"'max_probe_matches' must be an integer.*got 1.0"),
        ({"allow_unread_tensors": "no"}, r"'allow_unread_tensors' must be true or false; got 'no'"),
        ({"min_val_auc_delta": "-2e-2"}, r"'min_val_auc_delta' must be a number.*write floats with a dot"),
        ({"max_reidentification_rate": 1.5}, r"'max_reidentification_rate' must lie in \[0, 1\]; got 1.5.*fraction"),
        ({"max_reidentification_rate": -0.1}, r"must lie in \[0, 1\]; got -0.1"),
        ({"leakage_margin_ssim": -0.01}, r"'leakage_margin_ssim' must lie in \[0, 2\]; got -0.01"),
        ({"min_val_auc_delta": float("nan")}, r"'min_val_auc_delta' must lie in \[-1, 1\]; got nan"),
        ({"max_probe_matches": -1}, r"'max_probe_matches' must be >= 0; got -1"),
        ({"bootstrap_resamples": 99}, r"'bootstrap_resamples' must be >= 100; got 99.*e.g. 1000"),
        ({"auc_delta_statistic": "mean"}, r"'auc_delta_statistic' must be one of \['point', 'lower_bound'\]; got 'mean'"),
    ],
)
def test_load_policy_rejects_invalid_values(tmp_path, change, match):
    path = _write_policy(tmp_path, {**DEFAULTS, **change})
    with pytest.raises(PolicyError, match=match) as info:
        load_policy(path)
    assert str(path) in str(info.value)


def test_load_policy_rejects_missing_key(tmp_path):
    data = dict(DEFAULTS)
    del data["max_probe_matches"]
    with pytest.raises(PolicyError, match=r"missing keys \['max_probe_matches'\]; every key is required"):
        load_policy(_write_policy(tmp_path, data))


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("", r"is empty"),
        ("- 1\n- 2\n", r"must be a mapping.*got list"),
        ("min_val_auc_delta: [\n", r"is not valid YAML"),
        ("max_probe_matches: 0\nmax_probe_matches: 5\n", r"duplicate policy key 'max_probe_matches' at line 2"),
    ],
)
def test_load_policy_rejects_bad_yaml(tmp_path, text, match):
    path = tmp_path / "policy.yaml"
    path.write_text(text)
    with pytest.raises(PolicyError, match=match):
        load_policy(path)


def test_policy_direct_construction_is_validated():
    with pytest.raises(PolicyError, match=r"'max_probe_matches' must be an integer \(not a boolean\); got False"):
        Policy(**{**DEFAULTS, "max_probe_matches": False})


# ---------------------------------------------------------------------------------------------------
# Hash


def test_policy_sha256_is_stable_and_sensitive():
    policy = Policy(**DEFAULTS)
    assert policy.sha256() == Policy(**dict(reversed(list(DEFAULTS.items())))).sha256()
    assert len(policy.sha256()) == 64
    assert policy.sha256() != Policy(**{**DEFAULTS, "max_probe_matches": 1}).sha256()
    canonical = json.dumps(DEFAULTS, sort_keys=True, separators=(",", ":"))
    assert policy.sha256() == hashlib.sha256(canonical.encode()).hexdigest()


# ---------------------------------------------------------------------------------------------------
# Tightening

STRICTER = [
    ("min_val_auc_delta", -0.01),
    ("min_val_auc_delta", 0.0),
    ("auc_delta_statistic", "lower_bound"),
    ("leakage_margin_ssim", 0.02),
    ("max_reidentification_rate", 0.0),
    ("max_probe_matches", 1),
    ("allow_unread_tensors", False),
    ("bootstrap_resamples", 2000),
]

LOOSER = [
    ("min_val_auc_delta", -0.1),
    ("leakage_margin_ssim", 0.2),
    ("max_reidentification_rate", 0.5),
    ("max_probe_matches", 4),
    ("bootstrap_resamples", 200),
]


@pytest.mark.parametrize(("key", "value"), STRICTER)
def test_tighten_accepts_stricter(key, value):
    policy = Policy(**MIDDLE)
    tightened = tighten(policy, {key: value})
    assert getattr(tightened, key) == value
    unchanged = {k: v for k, v in MIDDLE.items() if k != key}
    assert {k: getattr(tightened, k) for k in unchanged} == unchanged


@pytest.mark.parametrize("key", list(MIDDLE))
def test_tighten_accepts_equal(key):
    policy = Policy(**MIDDLE)
    assert tighten(policy, {key: MIDDLE[key]}) == policy


@pytest.mark.parametrize(("key", "value"), LOOSER)
def test_tighten_rejects_looser(key, value):
    policy = Policy(**MIDDLE)
    with pytest.raises(PolicyError, match=rf"run override {key}={value} loosens the deployment policy \({MIDDLE[key]}\)"):
        tighten(policy, {key: value})


def test_tighten_rejects_lower_bound_to_point():
    policy = Policy(**{**MIDDLE, "auc_delta_statistic": "lower_bound"})
    with pytest.raises(PolicyError, match=r"auc_delta_statistic=point loosens the deployment policy \(lower_bound\)"):
        tighten(policy, {"auc_delta_statistic": "point"})


def test_tighten_rejects_allowing_unread_tensors():
    policy = Policy(**DEFAULTS)
    with pytest.raises(PolicyError, match=r"allow_unread_tensors=true loosens the deployment policy \(false\).*policy owner"):
        tighten(policy, {"allow_unread_tensors": True})


def test_tighten_message_is_actionable():
    with pytest.raises(PolicyError) as info:
        tighten(Policy(**DEFAULTS), {"max_reidentification_rate": 0.5})
    assert str(info.value) == (
        "run override max_reidentification_rate=0.5 loosens the deployment policy (0.01); a run may only tighten "
        "thresholds. Remove the override or ask the policy owner to change the policy file."
    )


def test_tighten_ignores_none():
    policy = Policy(**MIDDLE)
    assert tighten(policy, None) is policy
    assert tighten(policy, {"max_probe_matches": None, "min_val_auc_delta": None}) == policy


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"max_probe_match": 0}, r"run override 'max_probe_match' is not a policy key"),
        ({"max_probe_matches": True}, r"run override: policy key 'max_probe_matches' must be an integer"),
        ({"max_reidentification_rate": 2.0}, r"run override: .*must lie in \[0, 1\]; got 2.0"),
        (["max_probe_matches"], r"run overrides must be a mapping.*got list"),
    ],
)
def test_tighten_rejects_invalid_overrides(overrides, match):
    with pytest.raises(PolicyError, match=match):
        tighten(Policy(**MIDDLE), overrides)


def test_tighten_applies_several_overrides():
    tightened = tighten(Policy(**MIDDLE), {"max_probe_matches": 0, "auc_delta_statistic": "lower_bound"})
    assert tightened.max_probe_matches == 0
    assert tightened.auc_delta_statistic == "lower_bound"


# ---------------------------------------------------------------------------------------------------
# Comparison at publish time


@pytest.mark.parametrize(("key", "value"), STRICTER)
def test_check_not_looser_accepts_stricter(key, value):
    check_not_looser({**MIDDLE, key: value}, Policy(**MIDDLE))


@pytest.mark.parametrize(("key", "value"), LOOSER + [("auc_delta_statistic", "point"), ("allow_unread_tensors", True)])
def test_check_not_looser_rejects_looser(key, value):
    policy = Policy(**{**MIDDLE, "auc_delta_statistic": "lower_bound", "allow_unread_tensors": False})
    with pytest.raises(PolicyError, match=rf"looser than the deployment policy: {key}="):
        check_not_looser({**policy.to_dict(), key: value}, policy)


def test_check_not_looser_lists_every_looser_key():
    policy = Policy(**DEFAULTS)
    effective = {**DEFAULTS, "max_probe_matches": 2, "leakage_margin_ssim": 0.5}
    with pytest.raises(PolicyError, match=r"leakage_margin_ssim=0.5 \(policy: 0.05\), max_probe_matches=2 \(policy: 0\)"):
        check_not_looser(effective, policy)


def test_check_not_looser_rejects_incomplete_thresholds():
    data = dict(DEFAULTS)
    del data["allow_unread_tensors"]
    with pytest.raises(PolicyError, match=r"missing keys \['allow_unread_tensors'\]"):
        check_not_looser(data, Policy(**DEFAULTS))


def test_strictest_takes_stricter_of_each():
    loose = Policy(**MIDDLE)
    strict = Policy(**{**DEFAULTS, "max_probe_matches": 5})
    combined = strictest(loose, strict)
    assert combined == dataclasses.replace(Policy(**DEFAULTS), max_probe_matches=3, bootstrap_resamples=1000)
    assert strictest(strict, loose) == combined
