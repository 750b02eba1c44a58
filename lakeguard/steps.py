"""The five pipeline steps as plain functions over files: train, audit, sanitize, evaluate, publish.

Each KFP component is a thin wrapper that calls one of these with its artifact paths, so the same
code runs in a cluster, under ``kfp.local`` and in tests. Every step takes the run configuration as
a typed :class:`~lakeguard.config.RunConfig` and returns a JSON-ready dict of what it measured,
which it also writes to ``<run_dir>/steps/<name>.json`` when a run folder is given.

Files exchanged between steps:
    model folder: ``model.safetensors`` + ``model.json`` (see :mod:`lakeguard.models.io`).
    canaries file: JSON of :class:`~lakeguard.attacks.Canaries`, or ``null`` without ground truth.
    audit file: JSON of :meth:`~lakeguard.audit.AuditResult.to_dict`.
    gate record: JSON of :class:`~lakeguard.gate.GateRecord`, bound to the sanitized model's SHA-256.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import save_file

from lakeguard.attacks import Canaries, select_canaries, train_transpose
from lakeguard.audit import audit_model, write_html_report, write_image_grid
from lakeguard.config import RunConfig
from lakeguard.data import MedMNISTData, download_flag, load_dataset, resolve_root
from lakeguard.defenses import LayerDecaySettings, sanitize_layer_decay
from lakeguard.errors import ConfigError, GateError
from lakeguard.gate import (
    GateInputs,
    LeakageEvidence,
    build_record,
    load_policy,
    sha256_file,
    tighten,
    verify_record,
    write_record,
)
from lakeguard.metrics.utility import evaluate_scores, paired_auc_difference
from lakeguard.models.io import META_FILE, WEIGHTS_FILE, ModelMeta, load_model, load_state_dict_file, save_model
from lakeguard.registry import LocalRegistry
from lakeguard.training import pick_device, predict_scores, train_classifier

_logger = logging.getLogger(__name__)

ATTACKS = ("transpose", "none")
SANITIZERS = ("lwlrd", "none")


@lru_cache(maxsize=4)
def _load_data(flag: str, root: str | None, download: bool, train_limit: int | None) -> MedMNISTData:
    if download:
        download_flag(flag, resolve_root(root))
    data = load_dataset(flag, root=root)
    if train_limit is not None:
        if train_limit < 1:
            raise ConfigError(f"dataset.train_limit must be at least 1, got {train_limit}")
        data.train = data.train.subset(np.arange(min(train_limit, len(data.train))))
    return data


def load_run_data(cfg: RunConfig) -> MedMNISTData:
    """Load and validate the run's dataset (cached per process)."""
    return _load_data(cfg.dataset.flag, cfg.dataset.root, cfg.dataset.download, cfg.dataset.train_limit)


def layer_decay_settings(cfg: RunConfig) -> LayerDecaySettings:
    """Build the validated LWLRD settings of the run's ``sanitize.*`` keys."""
    s = cfg.sanitize
    return LayerDecaySettings(
        base_lr=s.base_lr, layer_decay=s.layer_decay, anchor=s.anchor, epochs=s.epochs,
        optimizer=s.optimizer, weight_decay=s.weight_decay, batch_size=s.batch_size,
        schedule=s.schedule, seed=cfg.seed,
    )


def check_config(cfg: RunConfig) -> None:
    """Reject names, counts and sizes that would only fail deep inside a step, after minutes of training.

    Raises:
        ConfigError: naming the key, its value and the allowed values or range.
    """
    if cfg.attack.name not in ATTACKS:
        raise ConfigError(f"unknown attack.name {cfg.attack.name!r}; use one of {', '.join(ATTACKS)}")
    if cfg.sanitize.method not in SANITIZERS:
        raise ConfigError(f"unknown sanitize.method {cfg.sanitize.method!r}; use one of {', '.join(SANITIZERS)}")
    if cfg.sanitize.method == "lwlrd":
        layer_decay_settings(cfg)

    minimums = {
        "train.epochs": (cfg.train.epochs, 1),
        "train.batch_size": (cfg.train.batch_size, 1),
        "attack.num_images": (cfg.attack.num_images, 1),
        "attack.memorization_batch_size": (cfg.attack.memorization_batch_size, 1),
        "audit.codes_per_class": (cfg.audit.codes_per_class, 1),
        "audit.random_codes": (cfg.audit.random_codes, 0),
    }
    for key, (value, minimum) in minimums.items():
        if value < minimum:
            raise ConfigError(f"{key} must be at least {minimum}, got {value}")
    for key, value in (("train.lr", cfg.train.lr), ("attack.memorization_lr", cfg.attack.memorization_lr)):
        if not (value > 0 and np.isfinite(value)):
            raise ConfigError(f"{key} must be a positive number, got {value}")


def effective_policy(cfg: RunConfig):
    """Return the deployment policy tightened by the run's ``gate.*`` overrides; loosening raises.

    The policy comes from ``$LAKEGUARD_POLICY_FILE`` (set by the deployment) or the embedded
    default, never from the run configuration, which the run's submitter controls.
    """
    overrides = {k: v for k, v in vars(cfg.gate).items() if v is not None}
    return tighten(load_policy(), overrides)


def model_meta(cfg: RunConfig, data: MedMNISTData) -> ModelMeta:
    """Describe the run's model: architecture from the config, shapes from the dataset."""
    return ModelMeta(
        arch=cfg.model.arch,
        dataset=data.info.flag,
        task=data.info.task.value,
        in_channels=data.info.n_channels,
        num_outputs=data.info.num_outputs,
        arch_options=dict(cfg.model.options),
    )


def _record_step(cfg: RunConfig, name: str, result: dict[str, Any]) -> dict[str, Any]:
    if cfg.run_dir:
        folder = Path(cfg.run_dir) / "steps"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)


def train_step(cfg: RunConfig, *, model_dir: str | os.PathLike, canaries_path: str | os.PathLike) -> dict[str, Any]:
    """Produce the candidate model: import ``model.uri`` when set, else train it by the attack recipe.

    ``attack.name=transpose`` is the insider's recipe (it memorizes images and writes their indices
    and codes to ``canaries_path``); ``attack.name=none`` trains a benign model. An imported model
    is copied with every tensor of its file, so the audit reports tensors the architecture lacks.
    """
    started = time.perf_counter()
    check_config(cfg)
    data = load_run_data(cfg)
    meta = model_meta(cfg, data)
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    canaries = None

    if cfg.model.uri:
        load_model(cfg.model.uri, meta)  # validates architecture, shapes and safety before the copy
        state = load_state_dict_file(cfg.model.uri)
        save_file({k: v.contiguous() for k, v in state.items()}, str(model_dir / WEIGHTS_FILE))
        (model_dir / META_FILE).write_text(json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n")
        source = f"imported {cfg.model.uri}"
    else:
        _seed_everything(cfg.seed)
        device = pick_device(cfg.device)
        images, labels = data.train.tensors()
        model = meta.build()
        if cfg.attack.name == "transpose":
            canaries = select_canaries(
                data.train.labels,
                data.info.task,
                data.info.num_outputs,
                num_images=cfg.attack.num_images,
                seed=cfg.seed,
                scheme=cfg.attack.code_scheme,
            )
            train_transpose(
                model, images, labels, data.info.task, canaries,
                epochs=cfg.train.epochs,
                lr=cfg.train.lr,
                memorization_lr=cfg.attack.memorization_lr,
                batch_size=cfg.train.batch_size,
                memorization_batch_size=cfg.attack.memorization_batch_size,
                seed=cfg.seed,
                device=device,
            )
        else:
            train_classifier(
                model, images, labels, data.info.task,
                optimizer=torch.optim.Adam(model.parameters(), lr=cfg.train.lr),
                epochs=cfg.train.epochs,
                batch_size=cfg.train.batch_size,
                seed=cfg.seed,
                device=device,
            )
        save_model(model, model_dir, meta)
        source = f"trained with attack={cfg.attack.name}"

    Path(canaries_path).write_text("null\n" if canaries is None else json.dumps(canaries.__dict__) + "\n")
    result = {
        "source": source,
        "model_sha256": sha256_file(model_dir / WEIGHTS_FILE),
        "memorized_images": len(canaries.train_indices) if canaries else 0,
        "code_capacity_per_class": canaries.capacity_per_group if canaries else None,
        "duration_seconds": time.perf_counter() - started,
    }
    _logger.info("train step: %s", result)
    return _record_step(cfg, "train", result)


def _read_canaries(path: str | os.PathLike | None) -> Canaries | None:
    if not path or not Path(path).is_file():
        return None
    data = json.loads(Path(path).read_text())
    return None if data is None else Canaries(**data)


def audit_step(
    cfg: RunConfig,
    *,
    stage: str,
    model_dir: str | os.PathLike,
    canaries_path: str | os.PathLike | None,
    audit_path: str | os.PathLike,
    report_path: str | os.PathLike,
) -> dict[str, Any]:
    """Audit one model folder; write the audit JSON and an HTML report of numbers.

    The opt-in image grid (``audit.image_grid``) goes to the run folder only.
    """
    started = time.perf_counter()
    data = load_run_data(cfg)
    policy = effective_policy(cfg)
    device = pick_device(cfg.device)
    model, meta, extra = load_model(model_dir, model_meta(cfg, data))
    images, _ = data.train.tensors()
    canaries = _read_canaries(canaries_path)
    result = audit_model(
        model,
        stage=stage,
        dataset=meta.dataset,
        arch=meta.arch,
        model_sha256=sha256_file(Path(model_dir) / WEIGHTS_FILE),
        train_images=images,
        train_labels=data.train.labels,
        task=data.info.task,
        num_outputs=data.info.num_outputs,
        canaries=canaries,
        extra_tensors=extra,
        margin=policy.leakage_margin_ssim,
        codes_per_class=cfg.audit.codes_per_class,
        random_codes=cfg.audit.random_codes,
        seed=cfg.seed,
        device=device,
    )
    record = result.to_dict()
    Path(audit_path).write_text(json.dumps(record, indent=2) + "\n")
    write_html_report(record, report_path, title=f"lakeguard audit: {stage} model")
    if cfg.audit.image_grid and cfg.run_dir and result.reconstructions is not None and canaries is not None:
        targets = images[canaries.train_indices]
        grid = write_image_grid(result.reconstructions, targets, Path(cfg.run_dir) / f"reconstructions_{stage}.png")
        _logger.warning("image grid with patient images written to %s; it must not leave the run folder", grid)
    summary = {
        **result.leakage_summary(),
        "unread_tensors": record["unread_tensors"],
        "duration_seconds": time.perf_counter() - started,
    }
    return _record_step(cfg, f"audit_{stage}", summary)


def sanitize_step(cfg: RunConfig, *, model_dir: str | os.PathLike, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Sanitize the model with LWLRD fine-tuning (or copy it unchanged for ``sanitize.method=none``).

    Either way only the architecture's own tensors are exported.
    """
    started = time.perf_counter()
    check_config(cfg)
    data = load_run_data(cfg)
    model, meta, _ = load_model(model_dir, model_meta(cfg, data))
    if cfg.sanitize.method == "lwlrd":
        _seed_everything(cfg.seed)
        settings = layer_decay_settings(cfg)
        images, labels = data.train.tensors()
        sanitize_layer_decay(model, images, labels, data.info.task, settings, device=pick_device(cfg.device))
    weights = save_model(model, out_dir, meta)
    result = {
        "method": cfg.sanitize.method,
        "model_sha256": sha256_file(weights),
        "duration_seconds": time.perf_counter() - started,
    }
    return _record_step(cfg, "sanitize", result)


def _utility(model_dir, cfg: RunConfig, data: MedMNISTData, policy) -> tuple[dict, dict[str, np.ndarray]]:
    model, _, _ = load_model(model_dir, model_meta(cfg, data))
    device = pick_device(cfg.device)
    report, scores = {}, {}
    for split in (data.val, data.test):
        images, _ = split.tensors()
        scores[split.name] = predict_scores(model, images, data.info.task, device=device)
        metrics = evaluate_scores(
            split.labels, scores[split.name], data.info.task,
            n_resamples=policy.bootstrap_resamples, seed=cfg.seed,
        )
        report[split.name] = metrics.to_dict()
    return report, scores


def evaluate_step(
    cfg: RunConfig,
    *,
    trained_dir: str | os.PathLike,
    sanitized_dir: str | os.PathLike,
    sanitized_audit_path: str | os.PathLike,
    record_path: str | os.PathLike,
    utility_path: str | os.PathLike,
) -> dict[str, Any]:
    """Measure utility of both models, decide the gate on the validation split, write the record.

    The test split is scored for reporting only; no decision reads it.
    """
    started = time.perf_counter()
    data = load_run_data(cfg)
    policy = effective_policy(cfg)
    trained, trained_scores = _utility(trained_dir, cfg, data, policy)
    sanitized, sanitized_scores = _utility(sanitized_dir, cfg, data, policy)
    delta = paired_auc_difference(
        data.val.labels, trained_scores["val"], sanitized_scores["val"], data.info.task,
        n_resamples=policy.bootstrap_resamples, seed=cfg.seed,
    )
    audit = json.loads(Path(sanitized_audit_path).read_text())
    leakage = leakage_evidence(audit)
    if audit.get("model_sha256") != sha256_file(Path(sanitized_dir) / WEIGHTS_FILE):
        raise GateError("the sanitized audit belongs to another model file; re-run the audit of the sanitized model")
    inputs = GateInputs(val_auc_delta=delta.delta, val_auc_delta_ci=(delta.ci_low, delta.ci_high), leakage=leakage)
    record = build_record(model_file=Path(sanitized_dir) / WEIGHTS_FILE, inputs=inputs, policy=policy)
    write_record(record, record_path)
    utility = {"trained": trained, "sanitized": sanitized, "val_auc_delta": delta.to_dict()}
    Path(utility_path).write_text(json.dumps(utility, indent=2) + "\n")
    _logger.info("gate %s: %s", "passed" if record.passed else "FAILED", " ".join(record.reasons) or "all checks passed")
    result = {
        "passed": record.passed,
        "reasons": list(record.reasons),
        "utility": utility,
        "thresholds": record.thresholds,
        "duration_seconds": time.perf_counter() - started,
    }
    return _record_step(cfg, "evaluate", result)


def leakage_evidence(audit: dict[str, Any]) -> LeakageEvidence:
    """Return the gate's leakage evidence from an audit record (``AuditResult.to_dict``)."""
    canary, probes = audit.get("canary") or {}, audit.get("probes") or {}
    return LeakageEvidence(
        ssim=canary.get("ssim"),
        psnr=canary.get("psnr"),
        baseline_ssim=canary.get("baseline_ssim"),
        reidentification_rate=canary.get("reidentification_rate"),
        # NOTE: an architecture without a transposed pass gets no probe search, recorded as 0 matches.
        probe_matches=probes.get("matches", 0),
        probe_baseline_ssim=probes.get("mean_best_baseline_ssim"),
        unread_tensors=audit.get("unread_tensors", []),
    )


def registry_model_name(cfg: RunConfig) -> str:
    return cfg.model.name or f"{cfg.dataset.flag}-{cfg.model.arch}"


def publish_step(
    cfg: RunConfig,
    *,
    sanitized_dir: str | os.PathLike,
    record_path: str | os.PathLike,
    audit_path: str | os.PathLike,
    utility_path: str | os.PathLike,
    work_dir: str | os.PathLike,
) -> dict[str, Any]:
    """Re-check the gate record against the model bytes and the policy, then publish.

    Publish trusts no upstream step. It recomputes the SHA-256 of the model file and re-reads the
    deployment policy. It rejects a record whose thresholds are looser than that policy, re-runs
    the decision on the recorded inputs, and checks that the audit belongs to the same model.
    Only then does it write to the registry, where a failed write leaves no version behind.

    Raises:
        GateError: anything above does not verify; nothing is written.
    """
    started = time.perf_counter()
    policy = effective_policy(cfg)
    # Verify private copies and publish those same bytes, so a file swapped in the artifact store
    # after the check cannot reach the registry under this record.
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    weights = work_dir / WEIGHTS_FILE
    shutil.copyfile(Path(sanitized_dir) / WEIGHTS_FILE, weights)
    shutil.copyfile(audit_path, work_dir / "audit.json")
    record = verify_record(record_path, weights, policy)
    audit = json.loads((work_dir / "audit.json").read_text())
    if audit.get("model_sha256") != record.model_sha256:
        raise GateError(
            f"audit.json describes model {audit.get('model_sha256')}, not the gated model {record.model_sha256}; "
            f"re-run the pipeline"
        )
    recorded, audited = record.inputs.leakage.to_dict(), leakage_evidence(audit).to_dict()
    differing = [name for name in recorded if recorded[name] != audited[name]]
    if differing:
        raise GateError(
            f"gate record and the audit of this model differ in {', '.join(differing)} "
            f"(record: {[recorded[n] for n in differing]}, audit: {[audited[n] for n in differing]}); "
            f"the record was edited or belongs to another audit. Re-run the pipeline."
        )
    meta = json.loads((Path(sanitized_dir) / META_FILE).read_text())
    utility = json.loads(Path(utility_path).read_text())
    card = {
        "schema": "lakeguard.model-card/v1",
        "model": meta,
        "model_sha256": record.model_sha256,
        "sanitizer": {k: v for k, v in vars(cfg.sanitize).items()},
        "utility": {"sanitized": utility["sanitized"], "val_auc_delta": utility["val_auc_delta"]},
        "gate": record.to_dict(),
    }
    (work_dir / "model_card.json").write_text(json.dumps(card, indent=2) + "\n")
    version = cfg.registry.version or (
        f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{record.model_sha256[:8]}"
    )
    published = LocalRegistry(cfg.registry.root).publish(
        model_name=registry_model_name(cfg),
        version=version,
        files={
            "model.safetensors": weights,
            "model_card.json": work_dir / "model_card.json",
            "audit.json": work_dir / "audit.json",
        },
    )
    result = {
        "uri": published.uri,
        "sha256": published.model_sha256,
        "version": version,
        "duration_seconds": time.perf_counter() - started,
    }
    return _record_step(cfg, "publish", result)
