"""Typed run configuration: the Hydra schema behind ``lakeguard run`` and the pipeline steps.

Gate thresholds are not part of the run configuration: they come from the deployment's policy file,
named by ``$LAKEGUARD_POLICY_FILE`` in the pods' environment (``lakeguard.gate.load_policy``). The
run configuration travels as a pipeline parameter that the run's submitter writes, so it cannot name
a policy file. A run may only tighten thresholds, through ``gate.*`` overrides.
Unknown keys and type mismatches fail when the configuration is composed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, OmegaConf

from lakeguard.errors import ConfigError


@dataclass
class DatasetConfig:
    flag: str = "retinamnist"  # any MedMNIST 2D flag; retinamnist, breastmnist, pneumoniamnist ship with lakeguard
    root: Optional[str] = None  # folder holding <flag>.npz; null = the bundled default data
    download: bool = False  # fetch <flag>.npz from Zenodo into root when missing (needs internet)
    train_limit: Optional[int] = None  # use only the first N training images (a deliberate subset, for tests)


@dataclass
class ModelConfig:
    arch: str = "mlp"  # mlp | cnn | resnet18
    uri: Optional[str] = None  # audit this model file instead of training one (.safetensors, or .pt read with weights_only)
    name: Optional[str] = None  # registry name; null = <flag>-<arch>
    options: dict[str, Any] = field(default_factory=dict)  # architecture options, e.g. {hidden: 1024, depth: 3}


@dataclass
class TrainConfig:
    epochs: int = 300  # passes over the training split
    lr: float = 1.0e-3  # Adam learning rate of the classification objective
    batch_size: int = 128  # images per classification step


@dataclass
class AttackConfig:
    name: str = "transpose"  # transpose = insider recipe that memorizes images; none = benign training
    num_images: int = 100  # images to memorize (capped by the code capacity: 3**outputs per class)
    code_scheme: str = "gray"  # gray = published index code; secret = private code book the probes cannot find
    memorization_lr: float = 1.0e-3  # Adam learning rate of the memorization objective
    memorization_batch_size: int = 64  # codes per memorization step, one step after each classification step


@dataclass
class SanitizeConfig:
    method: str = "lwlrd"  # lwlrd = layer-wise learning-rate-decay fine-tuning; none = export unchanged
    anchor: str = "input"  # end of the network where k = 0: input | output
    base_lr: float = 4.0e-3  # learning rate at the anchored layer (chosen by measurement: docs/sanitizer.md)
    layer_decay: float = 0.5  # factor per layer away from the anchor; lr_k = base_lr * layer_decay**k
    epochs: int = 3  # passes over the training split
    optimizer: str = "adam"  # adam | adamw | sgd (momentum 0.9)
    weight_decay: float = 0.0  # on weights only, not on biases or norm parameters
    batch_size: int = 128  # images per step
    schedule: str = "constant"  # constant | cosine, applied to every layer alike


@dataclass
class AuditConfig:
    codes_per_class: int = 243  # Gray codes decoded per class; 243 = all codes of a 5-output model
    random_codes: int = 256  # random codes in the scheme's value range, in addition
    image_grid: bool = False  # write reconstructions beside targets as PNG in the run folder (patient images)


@dataclass
class GateOverrides:
    """Run-level thresholds; each may only be stricter than the deployment policy (null = policy)."""

    min_val_auc_delta: Optional[float] = None
    auc_delta_statistic: Optional[str] = None
    leakage_margin_ssim: Optional[float] = None
    max_reidentification_rate: Optional[float] = None
    max_probe_matches: Optional[int] = None
    allow_unread_tensors: Optional[bool] = None
    bootstrap_resamples: Optional[int] = None


@dataclass
class RegistryConfig:
    root: str = "registry"  # local registry folder, laid out as the object store: <model>/<version>/...
    version: Optional[str] = None  # null = UTC timestamp plus the first 8 hex digits of the model's SHA-256


@dataclass
class RunConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    attack: AttackConfig = field(default_factory=AttackConfig)
    sanitize: SanitizeConfig = field(default_factory=SanitizeConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    gate: GateOverrides = field(default_factory=GateOverrides)
    registry: RegistryConfig = field(default_factory=RegistryConfig)
    run_dir: str = MISSING  # folder for this run's artifacts, summary.json and metrics file
    metrics_file: Optional[str] = None  # Prometheus text file; null = <run_dir>/metrics.prom
    seed: int = 0  # seeds data order, canary choice and probes
    device: str = "auto"  # auto = CUDA when available, else CPU


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore under the name ``run_schema``."""
    ConfigStore.instance().store(name="run_schema", node=RunConfig)


def to_json(cfg) -> str:
    """Serialise a composed config (DictConfig or RunConfig) to JSON with resolved values."""
    return json.dumps(OmegaConf.to_container(OmegaConf.structured(cfg) if not OmegaConf.is_config(cfg) else cfg, resolve=True))


def _reject_interpolations(value, path: str) -> None:
    # A pipeline parameter arrives already resolved. An interpolation left in it would be resolved
    # again in each pod, with that pod's environment: ${oc.env:...} could copy a secret of the
    # publish pod into the published model card.
    if isinstance(value, str) and "${" in value:
        raise ConfigError(
            f"run configuration value at {path or '<root>'} contains an interpolation ({value!r}); "
            f"pass resolved values, as `lakeguard run` does"
        )
    if isinstance(value, dict):
        for key, item in value.items():
            _reject_interpolations(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _reject_interpolations(item, f"{path}[{index}]")


def from_json(text: str, *, run_dir: str = "") -> RunConfig:
    """Rebuild a typed RunConfig from :func:`to_json` output; unknown keys fail.

    A non-empty ``run_dir`` replaces the configuration's run folder, as a pipeline step's own
    ``run_dir`` parameter does.

    Raises:
        ConfigError: the JSON does not match the schema.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise ConfigError(f"invalid run configuration: not JSON ({error})") from error
    _reject_interpolations(data, "")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(RunConfig), data)
        cfg = OmegaConf.to_object(merged)
    except Exception as error:  # OmegaConf raises several unrelated types for schema violations
        raise ConfigError(f"invalid run configuration: {error}") from error
    if run_dir:
        cfg.run_dir = run_dir
    return cfg
