"""Run metrics pushed to a real Pushgateway and read back through a real Prometheus server.

``scripts/test.sh`` starts both on 127.0.0.1 and exports their URLs. Without them the tests skip,
except under ``CI=true``, where a missing server is a failure.
"""

import json
import os
import time
import urllib.parse
import urllib.request

import pytest
from prometheus_client import CollectorRegistry

from lakeguard.observability import RunMetrics

GATEWAY = os.environ.get("LAKEGUARD_TEST_PUSHGATEWAY")
PROMETHEUS = os.environ.get("LAKEGUARD_TEST_PROMETHEUS")

if not (GATEWAY and PROMETHEUS):
    if os.environ.get("CI") == "true":
        pytest.fail("CI=true but LAKEGUARD_TEST_PUSHGATEWAY/PROMETHEUS are unset; run through scripts/test.sh", pytrace=False)
    pytestmark = pytest.mark.skip(reason="no Pushgateway/Prometheus started; run through scripts/test.sh")


def _query(expression: str) -> list[dict]:
    url = f"{PROMETHEUS}/api/v1/query?" + urllib.parse.urlencode({"query": expression})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    return body["data"]["result"]


def _wait_for(expression: str, timeout_s: float = 20.0) -> list[dict]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = _query(expression)
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"{expression} did not appear in Prometheus within {timeout_s} s")


def test_pushed_gate_metrics_reach_prometheus():
    run_id = f"itest-{os.getpid()}-{time.time_ns()}"
    metrics = RunMetrics(registry=CollectorRegistry())
    metrics.record_leakage("sanitized", ssim=0.61, baseline_ssim=0.68, reidentification_rate=0.0, probe_matches=0)
    metrics.record_gate(passed=False, failed_checks=2, val_auc_delta=-0.031)
    metrics.push(GATEWAY, job="lakeguard-itest", grouping_key={"run_id": run_id})

    passed = _wait_for(f'lakeguard_gate_passed{{run_id="{run_id}"}}')
    assert float(passed[0]["value"][1]) == 0.0
    assert passed[0]["metric"]["job"] == "lakeguard-itest"
    ssim = _wait_for(f'lakeguard_leakage_ssim{{run_id="{run_id}",stage="sanitized"}}')
    assert float(ssim[0]["value"][1]) == pytest.approx(0.61)
    delta = _wait_for(f'lakeguard_val_auc_delta{{run_id="{run_id}"}}')
    assert float(delta[0]["value"][1]) == pytest.approx(-0.031)


def test_second_push_under_same_key_replaces_values():
    run_id = f"itest-replace-{os.getpid()}-{time.time_ns()}"
    for passed in (False, True):
        metrics = RunMetrics(registry=CollectorRegistry())
        metrics.record_gate(passed=passed, failed_checks=0 if passed else 1, val_auc_delta=0.0)
        metrics.push(GATEWAY, job="lakeguard-itest", grouping_key={"run_id": run_id})
    with urllib.request.urlopen(f"{GATEWAY}/metrics", timeout=5) as response:
        text = response.read().decode()
    lines = [line for line in text.splitlines() if line.startswith("lakeguard_gate_passed") and run_id in line]
    assert len(lines) == 1, lines
    assert lines[0].rstrip().endswith(" 1")
