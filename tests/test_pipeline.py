"""The compiled pipeline IR and the checks `lakeguard run` makes before any step runs."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lakeguard import cli

REPO_ROOT = Path(__file__).resolve().parent.parent
COMMITTED_YAML = REPO_ROOT / "pipelines" / "lakeguard_pipeline.yaml"
REGENERATE = "python -m pipelines.lakeguard_pipeline"


def _load_ir(path: Path) -> dict:
    # kfp.kubernetes settings would go into a second YAML document; the pipeline spec is the first.
    return list(yaml.safe_load_all(path.read_text()))[0]


def _tasks_by_component(dag: dict) -> dict[str, list[tuple[str, dict]]]:
    tasks: dict[str, list[tuple[str, dict]]] = {}
    for name, task in dag["tasks"].items():
        component = task["componentRef"]["name"]
        # Reused components get a numbered copy, e.g. comp-attack-audit-2.
        for base in ("train", "attack-audit", "llrd-sanitize", "evaluate", "publish", "condition"):
            if component == f"comp-{base}" or component.startswith(f"comp-{base}-"):
                tasks.setdefault(base, []).append((name, task))
    return tasks


def _caching_enabled(task: dict) -> bool:
    return bool(task.get("cachingOptions", {}).get("enableCache", False))


@pytest.fixture(scope="module")
def ir() -> dict:
    return _load_ir(COMMITTED_YAML)


def test_compiled_yaml_matches_committed(tmp_path):
    compiled = tmp_path / "lakeguard_pipeline.yaml"
    # A subprocess without LAKEGUARD_IMAGE compiles with the default image, as the committed file does.
    env = {key: value for key, value in os.environ.items() if key != "LAKEGUARD_IMAGE"}
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.lakeguard_pipeline", str(compiled)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr

    assert compiled.read_text() == COMMITTED_YAML.read_text(), (
        f"{COMMITTED_YAML.relative_to(REPO_ROOT)} is stale; regenerate it with `{REGENERATE}` and commit it"
    )


def test_compiled_yaml_loads_with_kfp():
    from kfp import components

    component = components.load_component_from_file(str(COMMITTED_YAML))

    assert component.name == "lakeguard"
    assert set(component.component_spec.inputs) == {"config_json", "run_dir"}


def test_caching_per_task(ir):
    tasks = _tasks_by_component(ir["root"]["dag"])

    assert len(tasks["train"]) == 1
    assert len(tasks["llrd-sanitize"]) == 1
    assert len(tasks["attack-audit"]) == 2
    assert len(tasks["evaluate"]) == 1
    assert _caching_enabled(tasks["train"][0][1])
    assert _caching_enabled(tasks["llrd-sanitize"][0][1])
    for name, task in tasks["attack-audit"] + tasks["evaluate"]:
        assert not _caching_enabled(task), f"task {name} must not be cached"


def test_audits_cover_both_stages(ir):
    tasks = _tasks_by_component(ir["root"]["dag"])

    stages = {
        task["inputs"]["parameters"]["stage"]["runtimeValue"]["constant"] for _, task in tasks["attack-audit"]
    }

    assert stages == {"trained", "sanitized"}


def test_publish_only_under_gate_condition(ir):
    root_tasks = _tasks_by_component(ir["root"]["dag"])
    assert "publish" not in root_tasks, "publish must run only inside the gate condition"
    assert len(root_tasks["condition"]) == 1
    condition_name, condition_task = root_tasks["condition"][0]

    condition = condition_task["triggerPolicy"]["condition"]
    inner = _tasks_by_component(ir["components"][condition_task["componentRef"]["name"]]["dag"])

    # evaluate returns the gate decision as its single output parameter, whose key is "Output".
    assert condition == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
    assert condition_task["inputs"]["parameters"]["pipelinechannel--evaluate-Output"]["taskOutputParameter"] == {
        "outputParameterKey": "Output",
        "producerTask": "evaluate",
    }
    assert len(inner["publish"]) == 1
    assert not _caching_enabled(inner["publish"][0][1]), f"publish inside {condition_name} must not be cached"


@pytest.fixture
def no_pipeline(monkeypatch):
    """Make any attempt to start the pipeline fail the test."""
    monkeypatch.delenv("LAKEGUARD_POLICY_FILE", raising=False)

    def fail(*args, **kwargs):
        raise AssertionError("the pipeline started although the configuration is invalid")

    monkeypatch.setattr(cli, "run_pipeline_locally", fail)


def test_loosening_override_fails_before_training(tmp_path, capsys, no_pipeline):
    run_dir = tmp_path / "run"

    code = cli.main(
        ["run", "dataset=breastmnist", "gate.max_reidentification_rate=0.5", "--run-dir", str(run_dir),
         f"registry.root={tmp_path / 'registry'}"]
    )

    stderr = capsys.readouterr().err
    assert code == cli.EXIT_INVALID
    assert "lakeguard: error:" in stderr
    assert "max_reidentification_rate=0.5 loosens the deployment policy" in stderr
    assert not run_dir.exists(), "the run folder must not be created before the configuration is valid"


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.no_such_key=1", r"train\.no_such_key"),
        ("+no_such_key=1", r"no_such_key"),
        ("gate.no_such_threshold=0.1", r"gate\.no_such_threshold"),
        ("train.epochs=many", r"train\.epochs=many"),
        ("dataset=no_such_dataset", r"dataset/no_such_dataset"),
    ],
)
def test_invalid_config_exits_2(tmp_path, capsys, no_pipeline, override, match):
    code = cli.main(["run", override, "--run-dir", str(tmp_path / "run")])

    stderr = capsys.readouterr().err
    assert code == cli.EXIT_INVALID
    error_lines = [line for line in stderr.splitlines() if line.startswith("lakeguard: error:")]
    assert len(error_lines) == 1, stderr
    assert re.search(match, error_lines[0]), error_lines[0]


KFP_FAILURE = (
    "Pipeline \x1b[95m'lakeguard'\x1b[0m finished with status \x1b[91mFAILURE\x1b[0m. "
    "Inner task failed: \x1b[96m'attack-audit-2'\x1b[0m."
)


@pytest.mark.parametrize(
    ("output", "error_type", "message"),
    [
        (
            ["    Traceback (most recent call last):", '      File "steps.py", line 1', "    lakeguard.errors.DataError: breastmnist.npz not found", "    "],
            "DataError",
            "step attack-audit-2 failed: breastmnist.npz not found",
        ),
        (
            ["lakeguard.errors.PolicyError: first", "During handling ...", "lakeguard.errors.GateError: second"],
            "GateError",
            "step attack-audit-2 failed: second",
        ),
        (
            ["Traceback (most recent call last):", "KeyError: 'ssim'"],
            "StepFailedError",
            "step attack-audit-2 failed: KeyError: 'ssim'",
        ),
        ([], "StepFailedError", "step attack-audit-2 failed without an error message"),
    ],
)
def test_step_error_from_output(output, error_type, message):
    error = cli._step_error(KFP_FAILURE, output)

    assert type(error).__name__ == error_type
    assert str(error).startswith(message)
