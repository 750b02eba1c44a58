"""Sanitizers that scramble data hidden in a model's weights while keeping its utility."""

from lakeguard.defenses.dead_units import zero_dead_units
from lakeguard.defenses.layer_decay import (
    ANCHORS,
    OPTIMIZERS,
    LayerDecaySettings,
    param_groups_layer_decay,
    sanitize_layer_decay,
    scaled_lr_lambda,
)

__all__ = [
    "ANCHORS",
    "OPTIMIZERS",
    "LayerDecaySettings",
    "param_groups_layer_decay",
    "sanitize_layer_decay",
    "scaled_lr_lambda",
    "zero_dead_units",
]
