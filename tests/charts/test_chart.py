"""Tests of the Helm chart in charts/lakeguard: lint, the rendered policy ConfigMap, the alerts, the notes.

Most tests run the real helm binary: ``.tools/bin/helm`` (installed by ``scripts/install-helm.sh``)
or ``helm`` on PATH. Without it they skip, except under ``CI=true``, where a missing helm is a
failure. Tests that also need ``promtool`` or ``kubernetes-validate`` skip when those are missing.
"""

import copy
import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lakeguard.errors import PolicyError
from lakeguard.gate import AUC_DELTA_STATISTICS, Policy, load_policy, policy_from_mapping
from lakeguard.observability import RunMetrics

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART_DIR = REPO_ROOT / "charts" / "lakeguard"
DEFAULT_POLICY_FILE = REPO_ROOT / "lakeguard" / "gate" / "default_policy.yaml"
DOCKERFILE = REPO_ROOT / "docker" / "Dockerfile"
LOCAL_HELM = REPO_ROOT / ".tools" / "bin" / "helm"

RELEASE = "test-release"
KUBE_VERSION = "1.30.0"
PROMETHEUS_OPERATOR_API = "monitoring.coreos.com/v1"
HELM_TIMEOUT_S = 60

POLICY_KEYS = [field.name for field in dataclasses.fields(Policy)]


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}. CI=true requires it, so this is a failure, not a skip.", pytrace=False)
    pytest.skip(reason)


def _find_helm() -> str | None:
    if LOCAL_HELM.is_file() and os.access(LOCAL_HELM, os.X_OK):
        return str(LOCAL_HELM)
    return shutil.which("helm")


class Helm:
    """Runs the helm binary with cache, config and data folders of its own, so no test reads ~/.config/helm."""

    def __init__(self, binary: str, home: Path) -> None:
        self.binary = binary
        self.env = {
            **os.environ,
            "HELM_CACHE_HOME": str(home / "cache"),
            "HELM_CONFIG_HOME": str(home / "config"),
            "HELM_DATA_HOME": str(home / "data"),
        }

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run(
            [self.binary, *args], capture_output=True, text=True, env=self.env, timeout=HELM_TIMEOUT_S
        )
        if check and result.returncode != 0:
            pytest.fail(f"helm {' '.join(args)} exited with {result.returncode}:\n{result.stderr}", pytrace=False)
        return result

    def template(self, *args: str, chart: Path = CHART_DIR, release: str = RELEASE) -> list[dict]:
        """Render the chart for Kubernetes KUBE_VERSION and return its non-empty documents."""
        output = self.run("template", release, str(chart), "--kube-version", KUBE_VERSION, *args).stdout
        return [document for document in yaml.safe_load_all(output) if document]


@pytest.fixture(scope="module")
def helm(tmp_path_factory) -> Helm:
    binary = _find_helm()
    if binary is None:
        _skip_or_fail(f"helm not found at {LOCAL_HELM} or on PATH; run `bash scripts/install-helm.sh`")
    return Helm(binary, tmp_path_factory.mktemp("helm-home"))


def _values_file(tmp_path: Path, values: dict) -> str:
    path = tmp_path / "values.yaml"
    path.write_text(yaml.safe_dump(values, sort_keys=False), encoding="utf-8")
    return str(path)


def _only(documents: list[dict], kind: str) -> dict:
    matches = [document for document in documents if document["kind"] == kind]
    assert len(matches) == 1, f"expected one {kind}, got kinds {[d['kind'] for d in documents]}"
    return matches[0]


def _rendered_policy(documents: list[dict], tmp_path: Path) -> Policy:
    """Load the ConfigMap's policy.yaml the way a pipeline pod does: from a file, through load_policy."""
    config_map = _only(documents, "ConfigMap")
    path = tmp_path / "policy.yaml"
    path.write_text(config_map["data"]["policy.yaml"], encoding="utf-8")
    return load_policy(path)


def _chart_values() -> dict:
    return yaml.safe_load((CHART_DIR / "values.yaml").read_text(encoding="utf-8"))


def _dockerfile_policy_file() -> str:
    match = re.search(r"^ENV LAKEGUARD_POLICY_FILE=(\S+)$", DOCKERFILE.read_text(encoding="utf-8"), re.MULTILINE)
    assert match, f"{DOCKERFILE} sets no LAKEGUARD_POLICY_FILE"
    return match.group(1)


# ---------------------------------------------------------------------------------------------------
# values.yaml and values.schema.json, without helm


def test_values_policy_equals_default_policy():
    values_policy = _chart_values()["policy"]
    default_policy = yaml.safe_load(DEFAULT_POLICY_FILE.read_text(encoding="utf-8"))

    assert values_policy == default_policy
    assert list(values_policy) == list(default_policy), "keep the keys in the order of default_policy.yaml"
    assert policy_from_mapping(values_policy, source="values.yaml policy") == load_policy(DEFAULT_POLICY_FILE)


def test_schema_policy_keys_match_policy_fields():
    schema = yaml.safe_load((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    policy_schema = schema["properties"]["policy"]

    assert policy_schema["required"] == POLICY_KEYS
    assert list(policy_schema["properties"]) == POLICY_KEYS
    assert policy_schema["additionalProperties"] is False
    assert policy_schema["properties"]["auc_delta_statistic"]["enum"] == list(AUC_DELTA_STATISTICS)


def _schema_bounds() -> list[tuple[str, str, float]]:
    schema = yaml.safe_load((CHART_DIR / "values.schema.json").read_text(encoding="utf-8"))
    bounds = []
    for key, rule in schema["properties"]["policy"]["properties"].items():
        for bound in ("minimum", "maximum"):
            if bound in rule:
                bounds.append((key, bound, rule[bound]))
    return bounds


@pytest.mark.parametrize(("key", "bound", "value"), _schema_bounds())
def test_schema_bounds_match_policy_validation(key, bound, value):
    defaults = load_policy(DEFAULT_POLICY_FILE).to_dict()
    is_integer = isinstance(defaults[key], int)
    step = 1 if is_integer else 0.001
    outside = value - step if bound == "minimum" else value + step

    inside_policy = policy_from_mapping({**defaults, key: int(value) if is_integer else float(value)})
    assert getattr(inside_policy, key) == value
    with pytest.raises(PolicyError, match=key):
        policy_from_mapping({**defaults, key: outside})


# ---------------------------------------------------------------------------------------------------
# Lint and the policy ConfigMap


def test_lint_strict(helm):
    result = helm.run("lint", "--strict", str(CHART_DIR))

    assert "0 chart(s) failed" in result.stdout


def test_lint_strict_with_rule_enabled(helm):
    result = helm.run(
        "lint", "--strict", str(CHART_DIR), "--set", "prometheusRule.enabled=true", "--set",
        "registry.credentialsSecret=model-registry",
    )

    assert "0 chart(s) failed" in result.stdout


def test_default_render_is_policy_configmap_only(helm):
    documents = helm.template()

    assert [document["kind"] for document in documents] == ["ConfigMap"]
    assert documents[0]["metadata"]["name"] == f"{RELEASE}-lakeguard-policy"
    assert list(documents[0]["data"]) == ["policy.yaml"]


def test_policy_configmap_equals_embedded_default(helm, tmp_path, monkeypatch):
    monkeypatch.delenv("LAKEGUARD_POLICY_FILE", raising=False)

    policy = _rendered_policy(helm.template(), tmp_path)

    assert policy == load_policy()
    assert policy.sha256() == load_policy().sha256()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("min_val_auc_delta", -1),
        ("min_val_auc_delta", 0.005),
        ("auc_delta_statistic", "lower_bound"),
        ("leakage_margin_ssim", 0.0),
        # Go formats these as 1e-05 and 1e+06, which PyYAML would read as strings.
        ("max_reidentification_rate", 0.00001),
        ("bootstrap_resamples", 1000000),
        ("max_probe_matches", 3),
        ("allow_unread_tensors", True),
    ],
)
def test_policy_configmap_renders_value(helm, tmp_path, key, value):
    policy_values = {**_chart_values()["policy"], key: value}

    policy = _rendered_policy(helm.template("-f", _values_file(tmp_path, {"policy": policy_values})), tmp_path)

    assert getattr(policy, key) == value
    assert policy == policy_from_mapping(policy_values)


@pytest.mark.parametrize(
    ("policy_change", "message"),
    [
        ({"max_reidentification_rate": 1.5}, r"max_reidentification_rate: Must be less than or equal to 1"),
        ({"min_val_auc_delta": -1.5}, r"min_val_auc_delta: Must be greater than or equal to -1"),
        ({"leakage_margin_ssim": -0.1}, r"leakage_margin_ssim: Must be greater than or equal to 0"),
        ({"auc_delta_statistic": "median"}, r"auc_delta_statistic: .*must be one of"),
        ({"bootstrap_resamples": 50}, r"bootstrap_resamples: Must be greater than or equal to 100"),
        ({"bootstrap_resamples": 1000.5}, r"bootstrap_resamples: Invalid type. Expected: integer"),
        ({"max_probe_matches": -1}, r"max_probe_matches: Must be greater than or equal to 0"),
        ({"allow_unread_tensors": "false"}, r"allow_unread_tensors: Invalid type. Expected: boolean"),
        ({"max_reidentification_rate": "0.01"}, r"max_reidentification_rate: Invalid type. Expected: number"),
        ({"max_reidentification_rate": None}, r"max_reidentification_rate is required"),
        ({"min_auc": 0.5}, r"Additional property min_auc is not allowed"),
    ],
)
def test_invalid_policy_values_rejected(helm, tmp_path, policy_change, message):
    values = {"policy": {**_chart_values()["policy"], **policy_change}}

    result = helm.run("template", RELEASE, str(CHART_DIR), "-f", _values_file(tmp_path, values), check=False)

    assert result.returncode != 0
    assert re.search(message, result.stderr), result.stderr


def test_exponent_without_dot_is_number(helm, tmp_path):
    # PyYAML reads 1e-3 in a policy file as a string, but helm reads it in a values file as a number,
    # and the chart writes it back as 0.001.
    values = (CHART_DIR / "values.yaml").read_text(encoding="utf-8")
    values = values.replace("max_reidentification_rate: 0.01", "max_reidentification_rate: 1e-3")
    values_file = tmp_path / "values.yaml"
    values_file.write_text(values, encoding="utf-8")

    policy = _rendered_policy(helm.template("-f", str(values_file)), tmp_path)

    assert policy.max_reidentification_rate == 0.001


def test_decimal_from_set_rejected(helm):
    # helm --set passes 0.05 as a string, so values.yaml documents -f and --set-json for decimals.
    rejected = helm.run("template", RELEASE, str(CHART_DIR), "--set", "policy.leakage_margin_ssim=0.05", check=False)
    accepted = helm.template("--set-json", "policy.leakage_margin_ssim=0.05")

    assert rejected.returncode != 0
    assert "leakage_margin_ssim: Invalid type. Expected: number, given: string" in rejected.stderr
    assert _only(accepted, "ConfigMap")


def test_long_release_name_fits_dns_label(helm):
    release = "r" * 53  # helm 3 rejects release names longer than 53 characters

    config_map = _only(helm.template(release=release), "ConfigMap")

    name = config_map["metadata"]["name"]
    assert len(name) <= 63
    assert name.endswith("-policy")


def test_registry_secret_only_referenced(helm):
    documents = helm.template(
        "--set", "registry.credentialsSecret=model-registry", "--set", "prometheusRule.enabled=true",
        "--api-versions", PROMETHEUS_OPERATOR_API,
    )

    assert "Secret" not in {document["kind"] for document in documents}


# ---------------------------------------------------------------------------------------------------
# PrometheusRule


@pytest.mark.parametrize(
    "args",
    [
        pytest.param((), id="defaults"),
        pytest.param(("--set", "prometheusRule.enabled=true"), id="enabled-without-crd"),
        pytest.param(("--api-versions", PROMETHEUS_OPERATOR_API), id="crd-but-disabled"),
    ],
)
def test_prometheusrule_absent(helm, args):
    documents = helm.template(*args)

    assert "PrometheusRule" not in {document["kind"] for document in documents}


def _render_rule(helm: Helm, *args: str) -> dict:
    documents = helm.template("--api-versions", PROMETHEUS_OPERATOR_API, "--set", "prometheusRule.enabled=true", *args)
    return _only(documents, "PrometheusRule")


def _alerts(rule: dict) -> dict[str, dict]:
    return {alert["alert"]: alert for group in rule["spec"]["groups"] for alert in group["rules"]}


def test_prometheusrule_expressions(helm):
    alerts = _alerts(_render_rule(helm))

    assert alerts["LakeguardGateFailed"]["expr"] == "lakeguard_gate_passed == 0"
    assert alerts["LakeguardSanitizedModelReidentifies"]["expr"] == (
        'lakeguard_reidentification_ratio{stage="sanitized"} > 0.01'
    )


def test_prometheusrule_threshold_follows_policy(helm, tmp_path):
    policy_values = {**_chart_values()["policy"], "max_reidentification_rate": 0.00001}

    rule = _render_rule(helm, "-f", _values_file(tmp_path, {"policy": policy_values}))

    alert = _alerts(rule)["LakeguardSanitizedModelReidentifies"]
    assert alert["expr"] == 'lakeguard_reidentification_ratio{stage="sanitized"} > 1.0e-05'
    assert "1.0e-05" in alert["annotations"]["description"]


def test_prometheusrule_metric_names_exported(helm):
    metrics = RunMetrics()
    metrics.record_gate(passed=False, failed_checks=1, val_auc_delta=None)
    metrics.record_leakage(
        "sanitized", ssim=None, baseline_ssim=None, reidentification_rate=0.5, probe_matches=None
    )
    exported = {sample.name for family in metrics.registry.collect() for sample in family.samples}

    for name, alert in _alerts(_render_rule(helm)).items():
        metric = re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", alert["expr"]).group(0)
        assert metric in exported, f"{name} uses {metric}, which RunMetrics does not export"


def test_prometheusrule_labels_and_for(helm):
    rule = _render_rule(
        helm, "--set", "prometheusRule.labels.release=kube-prometheus-stack", "--set", "prometheusRule.for=5m",
        "--set", "prometheusRule.severity=warning",
    )

    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    for alert in _alerts(rule).values():
        assert alert["for"] == "5m"
        assert alert["labels"]["severity"] == "warning"


def _require_promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not on PATH (Debian: apt-get install prometheus)")
    return promtool


def test_prometheusrule_passes_promtool_check(helm, tmp_path):
    promtool = _require_promtool()
    rules_file = tmp_path / "rules.yaml"
    rules_file.write_text(yaml.safe_dump({"groups": _render_rule(helm)["spec"]["groups"]}), encoding="utf-8")

    result = subprocess.run([promtool, "check", "rules", str(rules_file)], capture_output=True, text=True)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 2 rules found" in result.stdout


def test_prometheusrule_alerts_fire(helm, tmp_path):
    promtool = _require_promtool()
    ratio = "lakeguard_reidentification_ratio"
    policy_values = {**_chart_values()["policy"], "max_reidentification_rate": 0.05}
    rule = _render_rule(helm, "-f", _values_file(tmp_path, {"policy": policy_values}))
    groups = copy.deepcopy(rule["spec"]["groups"])
    # promtool test rules compares annotations exactly. `promtool check rules` already parses their
    # templates, so this test drops them and checks only which series fire.
    for group in groups:
        for alert in group["rules"]:
            alert.pop("annotations")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": groups}), encoding="utf-8")
    unit_test = {
        "rule_files": ["rules.yaml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    {"series": 'lakeguard_gate_passed{job="failed"}', "values": "0x5"},
                    {"series": 'lakeguard_gate_passed{job="passed"}', "values": "1x5"},
                    {"series": f'{ratio}{{job="over",stage="sanitized"}}', "values": "0.06x5"},
                    {"series": f'{ratio}{{job="at_limit",stage="sanitized"}}', "values": "0.05x5"},
                    {"series": f'{ratio}{{job="before",stage="trained"}}', "values": "0.9x5"},
                ],
                "alert_rule_test": [
                    {
                        "eval_time": "2m",
                        "alertname": "LakeguardGateFailed",
                        "exp_alerts": [{"exp_labels": {"job": "failed", "severity": "critical"}}],
                    },
                    {
                        "eval_time": "2m",
                        "alertname": "LakeguardSanitizedModelReidentifies",
                        "exp_alerts": [{"exp_labels": {"job": "over", "stage": "sanitized", "severity": "critical"}}],
                    },
                ],
            }
        ],
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(unit_test), encoding="utf-8")

    result = subprocess.run(
        [promtool, "test", "rules", "test.yaml"], capture_output=True, text=True, cwd=tmp_path
    )

    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------
# Kubernetes schema validation


def _kubernetes_validate_command() -> list[str]:
    if importlib.util.find_spec("kubernetes_validate") is not None:
        return [sys.executable, "-m", "kubernetes_validate"]
    cli = shutil.which("kubernetes-validate")
    if cli is None:
        pytest.skip("kubernetes-validate is neither importable nor on PATH")
    return [cli]


def test_core_manifests_pass_kubernetes_validate(helm, tmp_path):
    command = _kubernetes_validate_command()
    documents = helm.template(
        "--set", "prometheusRule.enabled=true", "--api-versions", PROMETHEUS_OPERATOR_API
    )
    # kubernetes-validate has no schema for CRD kinds such as PrometheusRule and only warns on them,
    # so only core kinds are passed.
    core = [document for document in documents if "." not in document["apiVersion"].split("/")[0]]
    assert core, "expected at least the policy ConfigMap"
    files = []
    for index, document in enumerate(core):
        path = tmp_path / f"{index}-{document['kind']}.yaml"
        path.write_text(yaml.safe_dump(document), encoding="utf-8")
        files.append(str(path))

    result = subprocess.run(
        [*command, "-k", KUBE_VERSION, "--strict", *files], capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stdout + result.stderr


# ---------------------------------------------------------------------------------------------------
# Install notes and the image


def _render_notes(helm: Helm, tmp_path: Path, *args: str) -> str:
    """Render templates/NOTES.txt, which helm template leaves out, through a copy of the chart.

    Helm loads NOTES.txt as the template "lakeguard/templates/NOTES.txt", so an added template can
    include it as a string.
    """
    chart = tmp_path / "lakeguard"
    shutil.copytree(CHART_DIR, chart)
    (chart / "templates" / "zz-notes.yaml").write_text(
        'notes: {{ include "lakeguard/templates/NOTES.txt" . | toJson }}\n', encoding="utf-8"
    )
    output = helm.run("template", RELEASE, str(chart), "--show-only", "templates/zz-notes.yaml", *args).stdout
    return yaml.safe_load(output)["notes"]


def test_notes_mount_matches_dockerfile(helm, tmp_path):
    policy_file = _dockerfile_policy_file()
    config_map = _only(helm.template(), "ConfigMap")

    notes = _render_notes(helm, tmp_path)

    mount_path, file_name = policy_file.rsplit("/", 1)
    assert file_name in config_map["data"], "the image's policy file must be a key of the ConfigMap"
    assert f'config_map_name="{config_map["metadata"]["name"]}", mount_path="{mount_path}"' in notes
    assert f'task.set_env_variable("LAKEGUARD_POLICY_FILE", "{policy_file}")' in notes
    assert f"mountPath: {mount_path}\n" in notes
    assert "readOnly: true" in notes


def test_notes_registry_secret(helm, tmp_path):
    with_secret = _render_notes(helm, tmp_path / "a", "--set", "registry.credentialsSecret=model-registry")
    without_secret = _render_notes(helm, tmp_path / "b")

    assert 'secret_name="model-registry"' in with_secret
    assert "registry.credentialsSecret is empty" in without_secret


def test_notes_image_reference(helm, tmp_path):
    digest = "sha256:" + "0" * 64

    by_tag = _render_notes(helm, tmp_path / "a")
    by_digest = _render_notes(helm, tmp_path / "b", "--set", f"image.digest={digest}")

    assert "LAKEGUARD_IMAGE=lakeguard:0.1.0\n" in by_tag
    assert f"LAKEGUARD_IMAGE=lakeguard@{digest}\n" in by_digest


def test_notes_warn_without_crd(helm, tmp_path):
    without_crd = _render_notes(helm, tmp_path / "a", "--set", "prometheusRule.enabled=true")
    with_crd = _render_notes(
        helm, tmp_path / "b", "--set", "prometheusRule.enabled=true", "--api-versions", PROMETHEUS_OPERATOR_API
    )

    assert "WARNING: prometheusRule.enabled is true" in without_crd
    assert "WARNING" not in with_crd
    assert "lakeguard_gate_passed == 0" in with_crd
