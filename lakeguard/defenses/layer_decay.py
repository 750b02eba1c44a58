"""Layer-wise learning-rate-decay (LWLRD) fine-tuning as an exfiltration defence.

Thellier et al., "Mitigating Data Exfiltration Attacks through Layer-Wise Learning Rate Decay
Fine-Tuning", arXiv 2509.00027. The exported model is fine-tuned on its own utility task with a
learning rate that decays geometrically from one end of the network: layer k (counted from the
anchored end) trains at ``base_lr × layer_decay**k``. The layers near the anchor move far enough to
scramble what they encode, while the layers far from it keep most of the task's features.

Which end to anchor is a measured choice, not a convention. Fine-tuning recipes for transfer
learning (MAE, BEiT) anchor at the head. The transposed pass of the transpose attack writes pixels
through the first layer's weights, so anchoring at the input is what scrambles it. The default in
the shipped configuration comes from a measurement on the validation split (docs/sanitizer.md).

Contract of the ``lr_scale`` key: :func:`param_groups_layer_decay` stores each group's scale
``layer_decay**k`` and sets ``lr = base_lr × lr_scale``. A schedule must multiply every group's
learning rate by the same factor, which :func:`scaled_lr_lambda` with ``LambdaLR`` does, so the
per-group ratios survive the whole run. A scheduler that sets an absolute learning rate would erase
them and is not used.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable, Iterable

import torch
from torch import nn

from lakeguard.defenses.dead_units import zero_dead_units
from lakeguard.errors import ConfigError
from lakeguard.models.registry import layer_groups
from lakeguard.tasks import Task
from lakeguard.training import train_classifier

_logger = logging.getLogger(__name__)

ANCHORS = ("input", "output")
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class LayerDecaySettings:
    """Settings of one LWLRD fine-tuning run.

    Attributes:
        base_lr: learning rate of the anchored layer (k = 0).
        layer_decay: factor per layer away from the anchor, in (0, 1]; 1 is uniform fine-tuning.
        anchor: ``"input"`` or ``"output"``, the end of the network where k = 0.
        epochs: passes over the training split.
        optimizer: ``"adam"``, ``"adamw"`` or ``"sgd"`` (momentum 0.9).
        weight_decay: L2 (adam, sgd) or decoupled (adamw) weight decay on weights, not on biases
            or normalisation parameters.
        batch_size: images per step.
        schedule: ``"constant"`` or ``"cosine"`` (to 0 over all steps), applied to every group alike.
        seed: shuffling seed.
    """

    base_lr: float
    layer_decay: float
    anchor: str = "input"
    epochs: int = 2
    optimizer: str = "adam"
    weight_decay: float = 0.0
    batch_size: int = 128
    schedule: str = "constant"
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.base_lr > 0 and math.isfinite(self.base_lr)):
            raise ConfigError(f"sanitize.base_lr must be a positive number, got {self.base_lr}")
        if not 0 < self.layer_decay <= 1:
            raise ConfigError(f"sanitize.layer_decay must be in (0, 1], got {self.layer_decay}")
        if self.anchor not in ANCHORS:
            raise ConfigError(f"sanitize.anchor must be one of {ANCHORS}, got {self.anchor!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ConfigError(f"sanitize.optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"sanitize.schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if self.epochs < 1:
            raise ConfigError(f"sanitize.epochs must be at least 1, got {self.epochs}")
        if self.weight_decay < 0:
            raise ConfigError(f"sanitize.weight_decay must be >= 0, got {self.weight_decay}")
        if self.batch_size < 1:
            raise ConfigError(f"sanitize.batch_size must be at least 1, got {self.batch_size}")


def _skips_weight_decay(name: str, param: nn.Parameter, no_weight_decay_list: Iterable[str]) -> bool:
    # Biases and normalisation scales (1-D tensors) are not decayed, as in most fine-tuning recipes.
    return param.ndim <= 1 or name.endswith(".bias") or name in set(no_weight_decay_list)


def param_groups_layer_decay(
    model: nn.Module,
    *,
    base_lr: float,
    layer_decay: float,
    anchor: str = "input",
    weight_decay: float = 0.0,
    no_weight_decay_list: Iterable[str] = (),
) -> list[dict]:
    """Build optimizer parameter groups with a per-layer learning rate.

    Layers come from the architecture's ``layer_groups()`` (input first). With L layers, layer i
    gets ``k = i`` for ``anchor="input"`` and ``k = L − 1 − i`` for ``anchor="output"``, and
    ``lr_scale = layer_decay**k``. Each layer gives up to two groups, ``layer_{i}_decay`` and
    ``layer_{i}_no_decay``; every trainable parameter lands in exactly one group.

    Returns:
        Groups with keys ``name``, ``params``, ``param_names``, ``lr``, ``lr_scale``, ``weight_decay``.
    """
    if anchor not in ANCHORS:
        raise ConfigError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
    layers = layer_groups(model)
    parameters = dict(model.named_parameters())
    groups = []
    for i, names in enumerate(layers):
        k = i if anchor == "input" else len(layers) - 1 - i
        lr_scale = layer_decay**k
        split = {"decay": [], "no_decay": []}
        for name in names:
            kind = "no_decay" if _skips_weight_decay(name, parameters[name], no_weight_decay_list) else "decay"
            split[kind].append(name)
        for kind, members in split.items():
            if not members:
                continue
            groups.append(
                {
                    "name": f"layer_{i}_{kind}",
                    "params": [parameters[n] for n in members],
                    "param_names": members,
                    "lr_scale": lr_scale,
                    "lr": base_lr * lr_scale,
                    "weight_decay": weight_decay if kind == "decay" else 0.0,
                }
            )
    return groups


def scaled_lr_lambda(schedule: str, total_steps: int) -> Callable[[int], float]:
    """Return the common factor of every group's learning rate at a step, for ``LambdaLR``.

    ``LambdaLR`` multiplies each group's initial ``lr`` (already ``base_lr × lr_scale``) by this
    factor, so the ratio between two groups stays ``lr_scale_a / lr_scale_b`` at every step.
    """
    if schedule == "constant":
        return lambda step: 1.0
    if schedule == "cosine":
        return lambda step: 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    raise ConfigError(f"unknown schedule {schedule!r}; use one of {SCHEDULES}")


def build_optimizer(groups: list[dict], settings: LayerDecaySettings) -> torch.optim.Optimizer:
    """Create the optimizer named in ``settings`` over prepared parameter groups."""
    if settings.optimizer == "adam":
        return torch.optim.Adam(groups, lr=settings.base_lr)
    if settings.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=settings.base_lr)
    return torch.optim.SGD(groups, lr=settings.base_lr, momentum=0.9)


def sanitize_layer_decay(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    task: Task,
    settings: LayerDecaySettings,
    *,
    device: torch.device,
) -> nn.Module:
    """Fine-tune ``model`` in place with layer-wise learning-rate decay; return it in eval mode.

    After fine-tuning, hidden units that no training image activates are zeroed
    (:func:`~lakeguard.defenses.dead_units.zero_dead_units`), because their weights get no gradient.

    Args:
        model: a registered architecture.
        images: training images (N, C, H, W) in [0, 1].
        labels: training labels (N, 1) or (N, L).
        task: the dataset's task, which fixes the loss.
        settings: learning rates, decay, anchor, epochs and optimizer.
        device: where to train.
    """
    groups = param_groups_layer_decay(
        model,
        base_lr=settings.base_lr,
        layer_decay=settings.layer_decay,
        anchor=settings.anchor,
        weight_decay=settings.weight_decay,
    )
    optimizer = build_optimizer(groups, settings)
    steps = settings.epochs * math.ceil(len(images) / settings.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, scaled_lr_lambda(settings.schedule, steps))
    lrs = ", ".join(f"{g['name']}={g['lr']:.2e}" for g in groups if g["name"].endswith("_decay") and "no_" not in g["name"])
    _logger.info(
        "LWLRD: anchor %s, base_lr %.2e, layer_decay %.3f, %d epochs, %s, %d steps; per-layer lr: %s",
        settings.anchor, settings.base_lr, settings.layer_decay, settings.epochs, settings.optimizer, steps, lrs,
    )
    train_classifier(
        model,
        images,
        labels,
        task,
        optimizer=optimizer,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        seed=settings.seed,
        device=device,
        scheduler=scheduler,
        log_prefix="LWLRD",
    )
    # Fine-tuning cannot move weights that get no gradient; zero those of units that never activate.
    zero_dead_units(model, images)
    return model
