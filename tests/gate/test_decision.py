import dataclasses
import hashlib
import json
import math
from datetime import datetime, timezone

import pytest

from lakeguard.errors import GateError
from lakeguard.gate import (
    RECORD_SCHEMA,
    GateInputs,
    GateRecord,
    LeakageEvidence,
    Policy,
    build_record,
    decide,
    read_record,
    sha256_file,
    verify_record,
    write_record,
)

POLICY = Policy(
    min_val_auc_delta=-0.02,
    auc_delta_statistic="point",
    leakage_margin_ssim=0.05,
    max_reidentification_rate=0.01,
    max_probe_matches=0,
    allow_unread_tensors=False,
    bootstrap_resamples=1000,
)

CLEAN_LEAKAGE = LeakageEvidence(
    ssim=0.52,
    psnr=14.2,
    baseline_ssim=0.50,
    reidentification_rate=0.0,
    probe_matches=0,
    probe_baseline_ssim=0.48,
    unread_tensors=(),
)

CLEAN = GateInputs(val_auc_delta=-0.005, val_auc_delta_ci=(-0.015, 0.004), leakage=CLEAN_LEAKAGE)


def _with_leakage(**changes):
    return dataclasses.replace(CLEAN, leakage=dataclasses.replace(CLEAN_LEAKAGE, **changes))


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "sanitized.safetensors"
    path.write_bytes(bytes(range(256)) * 64)
    return path


@pytest.fixture
def record_path(tmp_path, model_file):
    path = tmp_path / "gate_record.json"
    write_record(build_record(model_file=model_file, inputs=CLEAN, policy=POLICY), path)
    return path


def _edit_record(path, edit):
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


# ---------------------------------------------------------------------------------------------------
# decide


def test_decide_passes_clean_inputs():
    decision = decide(CLEAN, POLICY)
    assert decision.passed
    assert decision.reasons == ()
    assert decision.skipped_checks == ()


FAILING = [
    pytest.param(dataclasses.replace(CLEAN, val_auc_delta=-0.05), POLICY, ["-0.05", "-0.02", "AUC"], id="auc-point"),
    pytest.param(
        CLEAN,
        dataclasses.replace(POLICY, auc_delta_statistic="lower_bound", min_val_auc_delta=-0.01),
        ["-0.015", "-0.01", "lower bound"],
        id="auc-lower-bound",
    ),
    pytest.param(_with_leakage(ssim=0.62), POLICY, ["0.62", "0.5", "0.05", "0.55"], id="ssim"),
    pytest.param(_with_leakage(reidentification_rate=0.25), POLICY, ["0.25", "0.01"], id="reidentification"),
    pytest.param(_with_leakage(probe_matches=3), POLICY, ["3 training images", "maximum 0"], id="probes"),
    pytest.param(_with_leakage(unread_tensors=("payload.weight",)), POLICY, ["1 tensors", "payload.weight"], id="unread"),
]


@pytest.mark.parametrize(("inputs", "policy", "numbers"), FAILING)
def test_decide_fails_each_check(inputs, policy, numbers):
    decision = decide(inputs, policy)
    assert not decision.passed
    assert len(decision.reasons) == 1
    for number in numbers:
        assert number in decision.reasons[0]


def test_decide_lower_bound_is_stricter_than_point():
    inputs = dataclasses.replace(CLEAN, val_auc_delta=-0.01, val_auc_delta_ci=(-0.03, 0.01))
    assert decide(inputs, POLICY).passed
    assert not decide(inputs, dataclasses.replace(POLICY, auc_delta_statistic="lower_bound")).passed


def test_decide_ssim_at_limit_passes():
    inputs = _with_leakage(ssim=0.54, baseline_ssim=0.5)
    assert decide(inputs, POLICY).passed


def test_decide_allows_unread_tensors_when_policy_does():
    inputs = _with_leakage(unread_tensors=("payload.weight",))
    assert decide(inputs, dataclasses.replace(POLICY, allow_unread_tensors=True)).passed


def test_decide_lists_every_failure():
    inputs = dataclasses.replace(
        _with_leakage(ssim=0.9, reidentification_rate=0.5, probe_matches=2, unread_tensors=("x",)), val_auc_delta=-0.3
    )
    assert len(decide(inputs, POLICY).reasons) == 5


def test_decide_lists_only_some_unread_names():
    names = tuple(f"hidden.{i}" for i in range(8))
    (reason,) = decide(_with_leakage(unread_tensors=names), POLICY).reasons
    assert "8 tensors" in reason
    assert "hidden.4" in reason
    assert "hidden.5" not in reason
    assert "3 more" in reason


@pytest.mark.parametrize(
    ("inputs", "skipped"),
    [
        (_with_leakage(baseline_ssim=None), "SSIM check skipped"),
        (_with_leakage(ssim=None), "SSIM check skipped"),
        (_with_leakage(reidentification_rate=None), "no canary ground truth"),
    ],
)
def test_decide_skips_check_without_evidence(inputs, skipped):
    decision = decide(inputs, POLICY)
    assert decision.passed
    assert len(decision.skipped_checks) == 1
    assert skipped in decision.skipped_checks[0]


@pytest.mark.parametrize(
    ("inputs", "name"),
    [
        (dataclasses.replace(CLEAN, val_auc_delta=math.nan), "validation AUC delta is NaN"),
        (dataclasses.replace(CLEAN, val_auc_delta_ci=(math.nan, 0.0)), "interval low is NaN"),
        (dataclasses.replace(CLEAN, val_auc_delta_ci=(-0.01, math.nan)), "interval high is NaN"),
        (_with_leakage(ssim=math.nan), "reconstruction SSIM is NaN"),
        (_with_leakage(psnr=math.nan), "reconstruction PSNR is NaN"),
        (_with_leakage(baseline_ssim=math.nan), "baseline SSIM is NaN"),
        (_with_leakage(reidentification_rate=math.nan), "reidentification rate is NaN"),
        (_with_leakage(probe_baseline_ssim=math.nan), "probe baseline SSIM is NaN"),
    ],
)
def test_decide_fails_on_nan(inputs, name):
    decision = decide(inputs, POLICY)
    assert not decision.passed
    assert any(name in reason for reason in decision.reasons)


def test_decide_passes_infinite_psnr():
    assert decide(_with_leakage(psnr=math.inf), POLICY).passed


@pytest.mark.parametrize(
    ("inputs", "match"),
    [
        (_with_leakage(ssim=-1.5, baseline_ssim=0.5), "reconstruction SSIM -1.5 is invalid"),
        (_with_leakage(reidentification_rate=-0.2), "reidentification rate -0.2 is invalid"),
        (dataclasses.replace(CLEAN, val_auc_delta=-math.inf), "validation AUC delta -inf is invalid"),
        (dataclasses.replace(CLEAN, val_auc_delta_ci=(0.01, -0.01)), "low end exceeds its high end"),
    ],
)
def test_decide_fails_on_out_of_range(inputs, match):
    decision = decide(inputs, POLICY)
    assert not decision.passed
    assert any(match in reason for reason in decision.reasons)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"ssim": "0.5"}, r"leakage.ssim must be a number or null; got '0.5'"),
        ({"probe_matches": 1.0}, r"leakage.probe_matches must be an integer; got 1.0"),
        ({"probe_matches": -1}, r"leakage.probe_matches must be >= 0; got -1"),
        ({"unread_tensors": "payload"}, r"leakage.unread_tensors must be a list of tensor names"),
        ({"reidentification_rate": True}, r"leakage.reidentification_rate must be a number or null; got True"),
    ],
)
def test_leakage_evidence_rejects_bad_types(changes, match):
    with pytest.raises(GateError, match=match):
        dataclasses.replace(CLEAN_LEAKAGE, **changes)


def test_gate_inputs_round_trip():
    inputs = _with_leakage(unread_tensors=("a", "b"), reidentification_rate=None)
    assert GateInputs.from_dict(json.loads(json.dumps(inputs.to_dict()))) == inputs


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.pop("val_auc_delta"), r"gate inputs must have exactly the keys.*missing \['val_auc_delta'\]"),
        (lambda d: d["leakage"].update(extra=1), r"leakage evidence must have exactly the keys.*unknown \['extra'\]"),
        (lambda d: d.update(val_auc_delta_ci=[0.1]), r"val_auc_delta_ci must be a \(low, high\) pair"),
    ],
)
def test_gate_inputs_from_dict_is_strict(edit, match):
    data = CLEAN.to_dict()
    edit(data)
    with pytest.raises(GateError, match=match):
        GateInputs.from_dict(data)


# ---------------------------------------------------------------------------------------------------
# Record


def test_sha256_file_matches_hashlib(model_file):
    assert sha256_file(model_file) == hashlib.sha256(model_file.read_bytes()).hexdigest()


def test_sha256_file_spans_chunks(tmp_path):
    path = tmp_path / "large.bin"
    data = bytes(range(251)) * 9000  # about 2.2 MiB, three chunks
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_build_record_fields(model_file):
    moment = datetime(2025, 1, 31, 12, 0, tzinfo=timezone.utc)
    record = build_record(model_file=model_file, inputs=CLEAN, policy=POLICY, created_at=moment)
    assert record.schema == RECORD_SCHEMA
    assert record.model_sha256 == hashlib.sha256(model_file.read_bytes()).hexdigest()
    assert record.passed is True
    assert record.reasons == ()
    assert record.thresholds == POLICY.to_dict()
    assert record.policy_sha256 == POLICY.sha256()
    assert record.created_at == "2025-01-31T12:00:00+00:00"


def test_build_record_stores_failure(model_file):
    record = build_record(model_file=model_file, inputs=_with_leakage(probe_matches=2), policy=POLICY)
    assert record.passed is False
    assert len(record.reasons) == 1


def test_build_record_rejects_naive_time(model_file):
    with pytest.raises(GateError, match="created_at must be timezone-aware"):
        build_record(model_file=model_file, inputs=CLEAN, policy=POLICY, created_at=datetime(2025, 1, 1))


def test_write_and_read_record_round_trip(tmp_path, model_file):
    record = build_record(model_file=model_file, inputs=_with_leakage(psnr=math.inf), policy=POLICY)
    path = tmp_path / "record.json"
    write_record(record, path)
    assert read_record(path) == record
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []


def test_write_record_replaces_existing(tmp_path, model_file):
    path = tmp_path / "record.json"
    path.write_text("old")
    record = build_record(model_file=model_file, inputs=CLEAN, policy=POLICY)
    write_record(record, path)
    assert read_record(path) == record


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda d: d.update(schema="lakeguard.gate-record/v0"), r"schema is 'lakeguard.gate-record/v0'; expected"),
        (lambda d: d.pop("created_at"), r"missing \['created_at'\]"),
        (lambda d: d.update(comment="x"), r"unknown \['comment'\]"),
        (lambda d: d.update(model_sha256="ABC"), r"model_sha256 must be 64 lowercase hex digits"),
        (lambda d: d.update(passed="yes"), r"passed must be true or false"),
        (lambda d: d.update(passed=False), r"inconsistent: passed=false with 0 failure reasons"),
        (lambda d: d["thresholds"].update(max_probe_matches=5), r"policy_sha256 .* does not match its thresholds"),
        (lambda d: d["thresholds"].pop("max_probe_matches"), r"missing keys \['max_probe_matches'\]"),
        (lambda d: d.update(created_at="yesterday"), r"created_at must be an ISO-8601 time"),
        (lambda d: d.update(created_at="2025-01-31T12:00:00+02:00"), r"created_at must be in UTC"),
        (lambda d: d["inputs"]["leakage"].pop("ssim"), r"leakage evidence must have exactly the keys"),
    ],
)
def test_read_record_is_strict(record_path, edit, match):
    _edit_record(record_path, edit)
    with pytest.raises(GateError, match=match):
        read_record(record_path)


def test_read_record_missing_file(tmp_path):
    with pytest.raises(GateError, match=r"gate record .*absent.json not found; run evaluate"):
        read_record(tmp_path / "absent.json")


# ---------------------------------------------------------------------------------------------------
# verify_record


def test_verify_record_passes_good_record(record_path, model_file):
    record = verify_record(record_path, model_file, POLICY)
    assert isinstance(record, GateRecord)
    assert record.passed


def test_verify_record_accepts_looser_current_policy(record_path, model_file):
    looser = dataclasses.replace(POLICY, max_probe_matches=3)
    assert verify_record(record_path, model_file, looser).passed


def test_verify_record_rejects_tampered_model(record_path, model_file):
    data = bytearray(model_file.read_bytes())
    data[100] ^= 0x01
    model_file.write_bytes(bytes(data))
    with pytest.raises(GateError, match=r"model file sha256 [0-9a-f]{64} does not match the gate record .*re-run evaluate"):
        verify_record(record_path, model_file, POLICY)


def test_verify_record_rejects_forged_pass(tmp_path, model_file):
    path = tmp_path / "record.json"
    write_record(build_record(model_file=model_file, inputs=_with_leakage(reidentification_rate=0.3), policy=POLICY), path)

    def forge(data):
        data["passed"] = True
        data["reasons"] = []

    _edit_record(path, forge)
    with pytest.raises(GateError, match=r"inputs fail the gate under the effective policy: reidentification rate 0.3"):
        verify_record(path, model_file, POLICY)


def test_verify_record_rejects_flipped_pass_flag(tmp_path, model_file):
    path = tmp_path / "record.json"
    write_record(build_record(model_file=model_file, inputs=_with_leakage(probe_matches=1), policy=POLICY), path)
    _edit_record(path, lambda d: d.update(passed=True))
    with pytest.raises(GateError, match=r"inconsistent: passed=true with 1 failure reasons"):
        verify_record(path, model_file, POLICY)


def test_verify_record_rejects_looser_thresholds(tmp_path, model_file):
    # The record was decided under an older, looser policy that let 2 probe matches through.
    loose = dataclasses.replace(POLICY, max_probe_matches=2)
    path = tmp_path / "record.json"
    write_record(build_record(model_file=model_file, inputs=_with_leakage(probe_matches=2), policy=loose), path)
    assert read_record(path).passed
    with pytest.raises(GateError, match=r"does not meet the deployment policy: .*max_probe_matches=2 \(policy: 0\).*Re-run evaluate"):
        verify_record(path, model_file, POLICY)


def test_verify_record_uses_stricter_record_thresholds(tmp_path, model_file):
    # Inputs that pass the current policy stay failed when the record was decided under a stricter one.
    strict = dataclasses.replace(POLICY, min_val_auc_delta=0.0)
    path = tmp_path / "record.json"
    write_record(build_record(model_file=model_file, inputs=CLEAN, policy=strict), path)
    with pytest.raises(GateError, match=r"fail the gate under the effective policy: validation AUC delta .* -0.005, below the minimum 0"):
        verify_record(path, model_file, POLICY)


def test_verify_record_rejects_stored_failure(record_path, model_file):
    def hold(data):
        data["passed"] = False
        data["reasons"] = ["held for manual review"]

    _edit_record(record_path, hold)
    with pytest.raises(GateError, match=r"records that the model failed the gate: held for manual review"):
        verify_record(record_path, model_file, POLICY)


def test_verify_record_rejects_corrupt_json(record_path, model_file):
    record_path.write_text(record_path.read_text()[:-20])
    with pytest.raises(GateError, match=r"is not valid JSON"):
        verify_record(record_path, model_file, POLICY)


def test_verify_record_rejects_missing_model(record_path, tmp_path):
    with pytest.raises(GateError, match=r"model file .*absent.bin cannot be read"):
        verify_record(record_path, tmp_path / "absent.bin", POLICY)
