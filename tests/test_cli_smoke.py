"""One end-to-end `lakeguard run` through kfp.local on a tiny real subset of BreastMNIST.

The subset (64 training images, 2 epochs, 4 memorized images) keeps the run short. Such a run does
not determine whether the gate should pass, so the test checks that every output agrees with the others.
"""

import json
from pathlib import Path

import pytest

from lakeguard import cli
from lakeguard.observability import load_textfile_metrics
from lakeguard.registry import LocalRegistry

TINY_RUN = [
    "dataset=breastmnist",
    "dataset.train_limit=64",
    "train.epochs=2",
    "attack.num_images=4",
    "sanitize.epochs=1",
    "audit.codes_per_class=3",
    "audit.random_codes=4",
]

SUMMARY_KEYS = {"dataset", "model", "attack", "utility", "leakage", "gate", "published"}
LEAKAGE_KEYS = {"ssim", "psnr", "baseline_ssim", "reidentification_rate", "probe_matches"}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """Run the pipeline once; return (exit code, summary or None, run folder, registry root)."""
    root = tmp_path_factory.mktemp("smoke")
    run_dir, registry_root = root / "run", root / "registry"
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("LAKEGUARD_POLICY_FILE", raising=False)
        code = cli.main(["run", *TINY_RUN, "--run-dir", str(run_dir), f"registry.root={registry_root}"])
    summary_file = run_dir / "summary.json"
    summary = json.loads(summary_file.read_text()) if summary_file.is_file() else None
    return code, summary, run_dir, registry_root


def test_run_exits_0(tiny_run):
    code, summary, run_dir, _ = tiny_run

    assert code == cli.EXIT_OK
    assert summary is not None, f"no summary.json in {run_dir}"


def test_summary_has_every_key(tiny_run):
    _, summary, _, _ = tiny_run

    assert SUMMARY_KEYS <= set(summary)
    assert (summary["dataset"], summary["model"], summary["attack"]) == ("breastmnist", "mlp", "transpose")
    for stage in ("trained", "sanitized"):
        assert set(summary["utility"][stage]) == {"val", "test"}
        for split in ("val", "test"):
            assert set(summary["utility"][stage][split]) == {"auc", "acc"}
            assert 0.0 <= summary["utility"][stage][split]["acc"] <= 1.0
        assert set(summary["leakage"][stage]) == LEAKAGE_KEYS
    assert set(summary["gate"]) == {"passed", "reasons"}
    assert isinstance(summary["gate"]["passed"], bool)
    assert summary["gate"]["passed"] == (not summary["gate"]["reasons"])
    assert summary["published"] is None or set(summary["published"]) == {"uri", "sha256"}


def test_run_folder_contains_config_and_steps(tiny_run):
    _, _, run_dir, _ = tiny_run

    assert (run_dir / "config.yaml").is_file()
    for name in ("train", "audit_trained", "sanitize", "audit_sanitized", "evaluate"):
        assert (run_dir / "steps" / f"{name}.json").is_file(), name


def test_metrics_file_agrees_with_summary(tiny_run):
    _, summary, run_dir, _ = tiny_run

    samples = load_textfile_metrics(run_dir / "metrics.prom")

    assert samples[("lakeguard_gate_passed", frozenset())] == float(summary["gate"]["passed"])
    assert samples[("lakeguard_gate_failed_checks", frozenset())] == len(summary["gate"]["reasons"])
    assert samples[("lakeguard_published_total", frozenset())] == (0.0 if summary["published"] is None else 1.0)
    info_labels = frozenset(
        {"dataset": "breastmnist", "model": "mlp", "attack": "transpose", "sanitize": "lwlrd"}.items()
    )
    assert samples[("lakeguard_run_info", info_labels)] == 1.0
    for stage in ("trained", "sanitized"):
        key = ("lakeguard_utility_accuracy", frozenset({"stage": stage, "split": "val"}.items()))
        assert samples[key] == pytest.approx(summary["utility"][stage]["val"]["acc"])


def test_registry_agrees_with_summary(tiny_run):
    _, summary, run_dir, registry_root = tiny_run
    registry = LocalRegistry(registry_root)
    model_name = summary["registry_model_name"]

    versions = registry.list_versions(model_name)

    if summary["published"] is None:
        assert summary["gate"]["passed"] is False
        assert versions == [], "a model that failed the gate must leave no version in the registry"
        assert not (run_dir / "steps" / "publish.json").exists()
    else:
        assert summary["gate"]["passed"] is True
        assert len(versions) == 1
        published = registry.verify(model_name, versions[0])
        assert published.uri == summary["published"]["uri"]
        assert published.model_sha256 == summary["published"]["sha256"]
        sanitized_sha256 = json.loads((run_dir / "steps" / "sanitize.json").read_text())["model_sha256"]
        assert published.model_sha256 == sanitized_sha256
        assert Path(published.uri.removeprefix("file://")).is_relative_to(registry_root.resolve())
