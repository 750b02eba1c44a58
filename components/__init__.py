"""Kubeflow Pipelines components of lakeguard: thin wrappers around ``lakeguard.steps``."""

from components.lakeguard_components import (
    DEFAULT_IMAGE,
    LAKEGUARD_IMAGE,
    attack_audit,
    evaluate,
    llrd_sanitize,
    publish,
    train,
)

__all__ = ["DEFAULT_IMAGE", "LAKEGUARD_IMAGE", "attack_audit", "evaluate", "llrd_sanitize", "publish", "train"]
