"""Tests of the Prometheus run metrics."""

import os
import shutil
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client import context_managers as prometheus_context_managers
from prometheus_client.parser import text_string_to_metric_families

from lakeguard.observability import RunMetrics, load_textfile_metrics


@pytest.fixture()
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture()
def metrics(registry: CollectorRegistry) -> RunMetrics:
    return RunMetrics(registry=registry)


def record_full_run(metrics: RunMetrics) -> None:
    metrics.record_run_info(dataset="pneumoniamnist", model="resnet18", attack="transpose", sanitize="layer_decay")
    metrics.record_leakage("trained", ssim=0.81, baseline_ssim=0.12, reidentification_rate=0.375, probe_matches=6)
    metrics.record_leakage("sanitized", ssim=0.18, baseline_ssim=0.11, reidentification_rate=0.0, probe_matches=0)
    metrics.record_utility("trained", "val", auc=0.951, acc=0.884)
    metrics.record_utility("sanitized", "val", auc=0.943, acc=0.871)
    metrics.record_utility("sanitized", "test", auc=0.925, acc=0.86)
    metrics.record_gate(passed=True, failed_checks=0, val_auc_delta=-0.008)
    metrics.record_published()


def key(name: str, **labels: str) -> tuple[str, frozenset]:
    return (name, frozenset(labels.items()))


def reference_parse(path: Path) -> dict[tuple[str, frozenset], float]:
    """Parse a text file with prometheus_client directly, independently of load_textfile_metrics."""
    samples = {}
    for family in text_string_to_metric_families(path.read_text()):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


EXPECTED_FULL_RUN = {
    key(
        "lakeguard_run_info", dataset="pneumoniamnist", model="resnet18", attack="transpose", sanitize="layer_decay"
    ): 1.0,
    key("lakeguard_leakage_ssim", stage="trained"): 0.81,
    key("lakeguard_leakage_ssim", stage="sanitized"): 0.18,
    key("lakeguard_leakage_baseline_ssim", stage="trained"): 0.12,
    key("lakeguard_leakage_baseline_ssim", stage="sanitized"): 0.11,
    key("lakeguard_reidentification_ratio", stage="trained"): 0.375,
    key("lakeguard_reidentification_ratio", stage="sanitized"): 0.0,
    key("lakeguard_probe_matches", stage="trained"): 6.0,
    key("lakeguard_probe_matches", stage="sanitized"): 0.0,
    key("lakeguard_utility_auc", stage="trained", split="val"): 0.951,
    key("lakeguard_utility_accuracy", stage="trained", split="val"): 0.884,
    key("lakeguard_utility_auc", stage="sanitized", split="val"): 0.943,
    key("lakeguard_utility_accuracy", stage="sanitized", split="val"): 0.871,
    key("lakeguard_utility_auc", stage="sanitized", split="test"): 0.925,
    key("lakeguard_utility_accuracy", stage="sanitized", split="test"): 0.86,
    key("lakeguard_gate_passed"): 1.0,
    key("lakeguard_gate_failed_checks"): 0.0,
    key("lakeguard_val_auc_delta"): -0.008,
    key("lakeguard_published_total"): 1.0,
}


# --- recording ----------------------------------------------------------------------------------


def test_textfile_round_trip(metrics, tmp_path):
    record_full_run(metrics)
    path = metrics.write_textfile(tmp_path / "lakeguard.prom")

    parsed = reference_parse(path)
    for sample_key, value in EXPECTED_FULL_RUN.items():
        assert parsed.get(sample_key) == pytest.approx(value), sample_key


def test_load_textfile_matches_reference(metrics, tmp_path):
    record_full_run(metrics)
    path = metrics.write_textfile(tmp_path / "lakeguard.prom")

    loaded = load_textfile_metrics(path)

    assert loaded == reference_parse(path)
    assert key("lakeguard_published_created") in loaded  # counters also expose a creation time


def test_textfile_write_is_atomic(metrics, tmp_path):
    path = tmp_path / "out" / "nested" / "lakeguard.prom"
    path.parent.mkdir(parents=True)
    path.write_text("# stale content from an earlier run\n")
    record_full_run(metrics)

    metrics.write_textfile(path)

    assert os.listdir(path.parent) == ["lakeguard.prom"]  # the temporary file was renamed
    assert key("lakeguard_gate_passed") in load_textfile_metrics(path)


def test_textfile_creates_parent(metrics, tmp_path):
    path = metrics.write_textfile(tmp_path / "new" / "lakeguard.prom")

    assert path.is_file()


def test_unrecorded_series_are_absent(metrics, registry):
    names = {sample.name for family in registry.collect() for sample in family.samples}

    assert names == {"lakeguard_published_total", "lakeguard_published_created"}
    assert registry.get_sample_value("lakeguard_published_total") == 0.0


def test_none_leaves_series_absent(metrics, registry):
    metrics.record_leakage("trained", ssim=0.5, baseline_ssim=None, reidentification_rate=None, probe_matches=None)
    metrics.record_utility("trained", "test", auc=None, acc=0.7)
    metrics.record_gate(passed=False, failed_checks=2, val_auc_delta=None)

    assert registry.get_sample_value("lakeguard_leakage_ssim", {"stage": "trained"}) == 0.5
    assert registry.get_sample_value("lakeguard_leakage_baseline_ssim", {"stage": "trained"}) is None
    assert registry.get_sample_value("lakeguard_reidentification_ratio", {"stage": "trained"}) is None
    assert registry.get_sample_value("lakeguard_probe_matches", {"stage": "trained"}) is None
    assert registry.get_sample_value("lakeguard_utility_auc", {"stage": "trained", "split": "test"}) is None
    assert registry.get_sample_value("lakeguard_utility_accuracy", {"stage": "trained", "split": "test"}) == 0.7
    assert registry.get_sample_value("lakeguard_val_auc_delta") is None
    assert registry.get_sample_value("lakeguard_gate_passed") == 0.0
    assert registry.get_sample_value("lakeguard_gate_failed_checks") == 2.0


def test_record_gate_twice_keeps_last(metrics, registry):
    metrics.record_gate(passed=False, failed_checks=3, val_auc_delta=-0.2)
    metrics.record_gate(passed=True, failed_checks=0, val_auc_delta=0.01)

    assert registry.get_sample_value("lakeguard_gate_passed") == 1.0
    assert registry.get_sample_value("lakeguard_gate_failed_checks") == 0.0
    assert registry.get_sample_value("lakeguard_val_auc_delta") == 0.01


def test_published_counter_counts(metrics, registry):
    for _ in range(3):
        metrics.record_published()

    assert registry.get_sample_value("lakeguard_published_total") == 3.0


def test_time_step_sets_duration(metrics, registry, monkeypatch):
    clock = iter([100.0, 102.5])
    monkeypatch.setattr(prometheus_context_managers, "default_timer", lambda: next(clock))

    with metrics.time_step("sanitize"):
        pass

    assert registry.get_sample_value("lakeguard_step_duration_seconds", {"step": "sanitize"}) == 2.5


def test_time_step_sets_duration_on_error(metrics, registry, monkeypatch):
    clock = iter([10.0, 10.25])
    monkeypatch.setattr(prometheus_context_managers, "default_timer", lambda: next(clock))

    with pytest.raises(RuntimeError, match="step failed"):
        with metrics.time_step("attack"):
            raise RuntimeError("step failed")

    assert registry.get_sample_value("lakeguard_step_duration_seconds", {"step": "attack"}) == 0.25


def test_metrics_use_injected_registry(metrics, registry):
    metrics.record_gate(passed=True, failed_checks=0, val_auc_delta=0.0)

    assert metrics.registry is registry
    assert registry.get_sample_value("lakeguard_gate_passed") == 1.0
    assert REGISTRY.get_sample_value("lakeguard_gate_passed") is None
    assert REGISTRY.get_sample_value("lakeguard_published_total") is None


def test_default_registry_is_fresh():
    first = RunMetrics()
    second = RunMetrics()
    first.record_published()

    assert first.registry is not REGISTRY
    assert first.registry.get_sample_value("lakeguard_published_total") == 1.0
    assert second.registry.get_sample_value("lakeguard_published_total") == 0.0


def test_custom_namespace(registry):
    metrics = RunMetrics(registry=registry, namespace="lakeguard_ci")
    metrics.record_gate(passed=True, failed_checks=0, val_auc_delta=None)

    assert registry.get_sample_value("lakeguard_ci_gate_passed") == 1.0


def test_duplicate_registration_rejected(registry):
    RunMetrics(registry=registry)

    with pytest.raises(ValueError, match="Duplicated timeseries"):
        RunMetrics(registry=registry)


# --- invalid input ------------------------------------------------------------------------------


LEAKAGE_OK = {"ssim": 0.5, "baseline_ssim": 0.1, "reidentification_rate": 0.2, "probe_matches": 1}


@pytest.mark.parametrize(
    ("stage", "override", "error", "match"),
    [
        ("raw", {}, ValueError, r"stage must be one of \['trained', 'sanitized'\], got 'raw'"),
        ("trained", {"ssim": float("nan")}, ValueError, r"ssim must be a finite number in \[-1.0, 1.0\], got nan"),
        ("trained", {"ssim": 1.5}, ValueError, r"ssim must be a finite number in \[-1.0, 1.0\], got 1.5"),
        ("trained", {"baseline_ssim": -1.01}, ValueError, r"baseline_ssim must be .* got -1.01"),
        ("trained", {"reidentification_rate": -0.1}, ValueError, r"reidentification_rate must be .*\[0.0, 1.0\]"),
        ("trained", {"reidentification_rate": float("inf")}, ValueError, r"reidentification_rate must be a finite"),
        ("trained", {"ssim": "0.5"}, TypeError, r"ssim must be a real number or None, got str '0.5'"),
        ("trained", {"ssim": True}, TypeError, r"ssim must be a real number or None, got bool"),
        ("trained", {"probe_matches": -1}, ValueError, r"probe_matches must be >= 0, got -1"),
        ("trained", {"probe_matches": 2.0}, TypeError, r"probe_matches must be an integer, got float"),
    ],
)
def test_record_leakage_rejects(metrics, registry, stage, override, error, match):
    with pytest.raises(error, match=match):
        metrics.record_leakage(stage, **{**LEAKAGE_OK, **override})

    assert registry.get_sample_value("lakeguard_leakage_ssim", {"stage": stage}) is None


@pytest.mark.parametrize(
    ("stage", "split", "auc", "acc", "error", "match"),
    [
        ("trained", "dev", 0.5, 0.5, ValueError, r"split must be one of \['train', 'val', 'test'\], got 'dev'"),
        ("final", "val", 0.5, 0.5, ValueError, r"stage must be one of"),
        ("trained", "val", 1.2, 0.5, ValueError, r"auc must be a finite number in \[0.0, 1.0\], got 1.2"),
        ("trained", "val", 0.5, -0.5, ValueError, r"acc must be a finite number in \[0.0, 1.0\], got -0.5"),
        ("trained", "val", [0.5], 0.5, TypeError, r"auc must be a real number or None, got list"),
    ],
)
def test_record_utility_rejects(metrics, stage, split, auc, acc, error, match):
    with pytest.raises(error, match=match):
        metrics.record_utility(stage, split, auc=auc, acc=acc)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"passed": 1, "failed_checks": 0, "val_auc_delta": 0.0}, TypeError, r"passed must be a bool, got int 1"),
        ({"passed": True, "failed_checks": 2, "val_auc_delta": 0.0}, ValueError, r"passed gate has no failed checks"),
        ({"passed": False, "failed_checks": -1, "val_auc_delta": 0.0}, ValueError, r"failed_checks must be >= 0"),
        ({"passed": False, "failed_checks": None, "val_auc_delta": 0.0}, TypeError, r"failed_checks must be an int"),
        ({"passed": False, "failed_checks": 1, "val_auc_delta": -2.0}, ValueError, r"val_auc_delta must be .*-2.0"),
    ],
)
def test_record_gate_rejects(metrics, registry, arguments, error, match):
    with pytest.raises(error, match=match):
        metrics.record_gate(**arguments)

    assert registry.get_sample_value("lakeguard_gate_passed") is None


@pytest.mark.parametrize("step", ["", "1st", "has space", "x" * 65, None])
def test_time_step_rejects_names(metrics, step):
    with pytest.raises(ValueError, match="step must be 1-64 characters"):
        with metrics.time_step(step):
            pass


@pytest.mark.parametrize("field", ["dataset", "model", "attack", "sanitize"])
def test_record_run_info_rejects_empty(metrics, field):
    labels = {"dataset": "pneumoniamnist", "model": "resnet18", "attack": "transpose", "sanitize": "none"}
    labels[field] = ""

    with pytest.raises(ValueError, match=f"{field} must be a non-empty string"):
        metrics.record_run_info(**labels)


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({"namespace": "lake-guard"}, ValueError, r"namespace must match .* got 'lake-guard'"),
        ({"namespace": ""}, ValueError, r"namespace must match"),
        ({"registry": object()}, TypeError, r"registry must be a prometheus_client CollectorRegistry, got object"),
    ],
)
def test_constructor_rejects(arguments, error, match):
    with pytest.raises(error, match=match):
        RunMetrics(**arguments)


def test_load_textfile_rejects_invalid(tmp_path):
    path = tmp_path / "broken.prom"
    path.write_text("lakeguard_gate_passed not-a-number\n")

    with pytest.raises(ValueError, match="broken.prom is not valid Prometheus text format"):
        load_textfile_metrics(path)


# --- promtool -----------------------------------------------------------------------------------


@pytest.mark.skipif(
    shutil.which("promtool") is None,
    reason="promtool is not on PATH; install the 'prometheus' package (e.g. apt-get install prometheus) to run it",
)
def test_promtool_accepts_textfile(metrics, tmp_path):
    record_full_run(metrics)
    with metrics.time_step("train"):
        pass
    path = metrics.write_textfile(tmp_path / "lakeguard.prom")

    with open(path, "rb") as stream:
        result = subprocess.run(
            ["promtool", "check", "metrics"], stdin=stream, capture_output=True, text=True, timeout=30
        )

    assert result.returncode == 0, result.stdout + result.stderr


# --- push ---------------------------------------------------------------------------------------


class _RecordingGateway(BaseHTTPRequestHandler):
    """Accept Pushgateway requests and store method, path and body on the server."""

    def do_PUT(self) -> None:  # noqa: N802 (name fixed by BaseHTTPRequestHandler)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.requests.append((self.command, self.path, body.decode()))
        self.send_response(200)
        self.end_headers()

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (signature fixed by the base class)
        pass


@pytest.fixture()
def gateway():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RecordingGateway)
    server.requests = []
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join(timeout=5)


def test_push_sends_put_with_grouping_key(metrics, gateway):
    record_full_run(metrics)
    host, port = gateway.server_address

    metrics.push(f"http://{host}:{port}", grouping_key={"run_id": "run-42"}, timeout_s=5)

    assert len(gateway.requests) == 1
    method, path, body = gateway.requests[0]
    assert method == "PUT"
    assert path == "/metrics/job/lakeguard/run_id/run-42"
    assert "lakeguard_gate_passed 1.0" in body
    assert 'lakeguard_leakage_ssim{stage="sanitized"} 0.18' in body


def test_push_reports_unreachable_gateway(metrics, gateway):
    host, port = gateway.server_address
    gateway.shutdown()
    gateway.server_close()

    with pytest.raises(OSError):
        metrics.push(f"http://{host}:{port}", grouping_key={"run_id": "run-42"}, timeout_s=2)


@pytest.mark.parametrize(
    ("url", "arguments", "match"),
    [
        ("127.0.0.1:9091", {}, r"gateway_url must be an http:// or https:// URL with a host, got '127.0.0.1:9091'"),
        ("ftp://127.0.0.1", {}, r"gateway_url must be an http:// or https:// URL"),
        ("http://", {}, r"gateway_url must be an http:// or https:// URL"),
        ("http://127.0.0.1:9", {"grouping_key": {}}, r"grouping_key must be a non-empty mapping"),
        ("http://127.0.0.1:9", {"grouping_key": {"job": "x"}}, r"grouping_key label 'job'"),
        ("http://127.0.0.1:9", {"grouping_key": {"run-id": "x"}}, r"grouping_key label 'run-id'"),
        ("http://127.0.0.1:9", {"grouping_key": {"run_id": ""}}, r"grouping_key value of 'run_id'"),
        ("http://127.0.0.1:9", {"job": ""}, r"job must be a non-empty string"),
        ("http://127.0.0.1:9", {"timeout_s": 0}, r"timeout_s must be > 0 seconds, got 0.0"),
        ("http://127.0.0.1:9", {"timeout_s": float("inf")}, r"timeout_s must be a finite number"),
    ],
)
def test_push_rejects_arguments(metrics, url, arguments, match):
    arguments = {"grouping_key": {"run_id": "run-42"}, **arguments}

    with pytest.raises(ValueError, match=match):
        metrics.push(url, **arguments)
