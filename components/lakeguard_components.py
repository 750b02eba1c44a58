"""Kubeflow Pipelines components of the lakeguard release gate: one per step of ``lakeguard.steps``.

Each component is a lightweight Python component that rebuilds the typed run configuration from
``config_json`` (the output of :func:`lakeguard.config.to_json`), makes one call into
:mod:`lakeguard.steps` with its artifact paths, and fills the artifacts' metadata. KFP ships only the
function's source to the pod, so every import sits inside the body and the ``lakeguard`` package
must come from the image.

``run_dir`` names the folder where each step writes ``steps/<name>.json``; an empty string keeps the
``run_dir`` of the configuration. On a cluster it must be a volume shared by all steps for
``lakeguard run`` to assemble ``summary.json`` from it.

Artifacts exchanged between the components:
    model (``Model``): a folder with ``model.safetensors`` and ``model.json``.
    canaries (``Dataset``): JSON of the memorized image indices and codes, or ``null``.
    audit (``Metrics``): the audit JSON; its metadata contains the headline leakage numbers.
    report (``HTML``): the audit numbers as an HTML page (no patient images).
    gate_record (``Artifact``): the gate record JSON, bound to the sanitized model's SHA-256.
    utility (``Metrics``): AUC and accuracy of both models; its metadata contains the headline numbers.
"""

import os

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Metrics, Model, Output

# NOTE: a release pins the image by digest (lakeguard@sha256:...), because a tag can be moved to other
# bytes after the pipeline was compiled. The image carries lakeguard and kfp.
DEFAULT_IMAGE = "lakeguard:0.1.0"

LAKEGUARD_IMAGE = os.environ.get("LAKEGUARD_IMAGE") or DEFAULT_IMAGE
"""Base image of every component; the ``LAKEGUARD_IMAGE`` environment variable at import time overrides it."""


@dsl.component(base_image=LAKEGUARD_IMAGE, install_kfp_package=False)
def train(config_json: str, run_dir: str, model: Output[Model], canaries: Output[Dataset]):
    """Train the candidate model by the attack recipe, or import ``model.uri``.

    Args:
        config_json: the resolved run configuration as JSON.
        run_dir: folder for ``steps/train.json``; empty keeps the configuration's ``run_dir``.
        model: model folder (``model.safetensors`` + ``model.json``).
        canaries: JSON of the memorized images' indices and codes, ``null`` without an attack.
    """
    from lakeguard import steps
    from lakeguard.config import from_json

    cfg = from_json(config_json, run_dir=run_dir)

    result = steps.train_step(cfg, model_dir=model.path, canaries_path=canaries.path)

    model.metadata.update({"sha256": result["model_sha256"], "arch": cfg.model.arch, "dataset": cfg.dataset.flag})
    canaries.metadata.update({"dataset": cfg.dataset.flag, "memorized_images": result["memorized_images"]})


@dsl.component(base_image=LAKEGUARD_IMAGE, install_kfp_package=False)
def attack_audit(
    config_json: str,
    run_dir: str,
    stage: str,
    model: Input[Model],
    canaries: Input[Dataset],
    audit: Output[Metrics],
    report: Output[HTML],
):
    """Audit one model for leakage of training images.

    Args:
        config_json: the resolved run configuration as JSON.
        run_dir: folder for ``steps/audit_<stage>.json``; empty keeps the configuration's ``run_dir``.
        stage: ``"trained"`` or ``"sanitized"``, the model state being audited.
        model: model folder to audit.
        canaries: the train step's canaries file (``null`` gives no canary ground truth).
        audit: audit JSON; its metadata contains the finite headline numbers.
        report: HTML page of the audit numbers.
    """
    import math

    from lakeguard import steps
    from lakeguard.config import from_json

    cfg = from_json(config_json, run_dir=run_dir)

    result = steps.audit_step(
        cfg, stage=stage, model_dir=model.path, canaries_path=canaries.path, audit_path=audit.path, report_path=report.path
    )

    # Metrics metadata contains numbers only, and protobuf's JSON has no token for NaN or infinity,
    # so unmeasured and non-finite values are left out.
    for key in ("ssim", "psnr", "baseline_ssim", "reidentification_rate", "probe_matches"):
        value = result.get(key)
        if value is not None and math.isfinite(value):
            audit.log_metric(key, float(value))
    audit.log_metric("unread_tensors", float(len(result["unread_tensors"])))
    report.metadata.update({"stage": stage, "sha256": model.metadata.get("sha256"), "dataset": cfg.dataset.flag})


@dsl.component(base_image=LAKEGUARD_IMAGE, install_kfp_package=False)
def llrd_sanitize(config_json: str, run_dir: str, model: Input[Model], sanitized_model: Output[Model]):
    """Sanitize the model by layer-wise learning-rate-decay fine-tuning (``sanitize.method``).

    Args:
        config_json: the resolved run configuration as JSON.
        run_dir: folder for ``steps/sanitize.json``; empty keeps the configuration's ``run_dir``.
        model: the trained model folder.
        sanitized_model: the sanitized model folder, holding only the architecture's own tensors.
    """
    from lakeguard import steps
    from lakeguard.config import from_json

    cfg = from_json(config_json, run_dir=run_dir)

    result = steps.sanitize_step(cfg, model_dir=model.path, out_dir=sanitized_model.path)

    sanitized_model.metadata.update(
        {
            "sha256": result["model_sha256"],
            "arch": cfg.model.arch,
            "dataset": cfg.dataset.flag,
            "sanitize_method": result["method"],
        }
    )


@dsl.component(base_image=LAKEGUARD_IMAGE, install_kfp_package=False)
def evaluate(
    config_json: str,
    run_dir: str,
    trained_model: Input[Model],
    sanitized_model: Input[Model],
    sanitized_audit: Input[Metrics],
    gate_record: Output[Artifact],
    utility: Output[Metrics],
) -> bool:
    """Measure the utility of both models and decide the release gate on the validation split.

    Args:
        config_json: the resolved run configuration as JSON.
        run_dir: folder for ``steps/evaluate.json``; empty keeps the configuration's ``run_dir``.
        trained_model: the trained model folder.
        sanitized_model: the sanitized model folder.
        sanitized_audit: the audit of the sanitized model.
        gate_record: gate record JSON, bound to the sanitized model's SHA-256.
        utility: AUC and accuracy of both models; its metadata contains the headline numbers.

    Returns:
        Whether the sanitized model passed the gate, as the task's single output parameter ``Output``.
    """
    import math

    from lakeguard import steps
    from lakeguard.config import from_json

    cfg = from_json(config_json, run_dir=run_dir)

    result = steps.evaluate_step(
        cfg,
        trained_dir=trained_model.path,
        sanitized_dir=sanitized_model.path,
        sanitized_audit_path=sanitized_audit.path,
        record_path=gate_record.path,
        utility_path=utility.path,
    )

    scores = result["utility"]
    for stage in ("trained", "sanitized"):
        for split in ("val", "test"):
            for name in ("auc", "acc"):
                value = scores[stage][split][name]
                if value is not None and math.isfinite(value):
                    utility.log_metric(f"{stage}_{split}_{name}", float(value))
    utility.log_metric("val_auc_delta", float(scores["val_auc_delta"]["delta"]))
    gate_record.metadata.update(
        {"sha256": sanitized_model.metadata.get("sha256"), "passed": result["passed"], "reasons": result["reasons"]}
    )

    return result["passed"]


@dsl.component(base_image=LAKEGUARD_IMAGE, install_kfp_package=False)
def publish(
    config_json: str,
    run_dir: str,
    sanitized_model: Input[Model],
    gate_record: Input[Artifact],
    sanitized_audit: Input[Metrics],
    utility: Input[Metrics],
    release: Output[Artifact],
):
    """Verify the gate record against the model bytes and the policy, then publish to the registry.

    Args:
        config_json: the resolved run configuration as JSON.
        run_dir: folder for ``steps/publish.json``; empty keeps the configuration's ``run_dir``.
        sanitized_model: the sanitized model folder that passed the gate.
        gate_record: its gate record.
        sanitized_audit: its audit.
        utility: the evaluate step's utility JSON.
        release: folder with the published model card and audit; its metadata contains the registry URI.
    """
    from lakeguard import steps
    from lakeguard.config import from_json

    cfg = from_json(config_json, run_dir=run_dir)

    result = steps.publish_step(
        cfg,
        sanitized_dir=sanitized_model.path,
        record_path=gate_record.path,
        audit_path=sanitized_audit.path,
        utility_path=utility.path,
        work_dir=release.path,
    )

    release.metadata.update(
        {
            "uri": result["uri"],
            "sha256": result["sha256"],
            "version": result["version"],
            "arch": cfg.model.arch,
            "dataset": cfg.dataset.flag,
        }
    )
