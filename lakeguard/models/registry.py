"""Registered architectures by name, and the layer enumeration that layer-wise LR decay uses."""

from __future__ import annotations

from typing import Callable

from torch import nn

from lakeguard.errors import ConfigError
from lakeguard.models.cnn import TransposableCNN
from lakeguard.models.mlp import TransposableMLP
from lakeguard.models.resnet import ResNet18

ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "mlp": TransposableMLP,
    "cnn": TransposableCNN,
    "resnet18": ResNet18,
}


def build_model(arch: str, *, in_channels: int, num_outputs: int, image_size: int = 28, **kwargs) -> nn.Module:
    """Build a fresh model of a registered architecture.

    Args:
        arch: ``"mlp"``, ``"cnn"`` or ``"resnet18"``.
        in_channels: image channels.
        num_outputs: classes, or labels for multi-label tasks.
        image_size: input height and width.
        **kwargs: architecture options (``hidden`` and ``depth`` for the MLP, ``width`` for the CNN).

    Raises:
        ConfigError: unknown architecture or option.
    """
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown model.arch {arch!r}; use one of {', '.join(sorted(ARCHITECTURES))}")
    try:
        return ARCHITECTURES[arch](in_channels=in_channels, num_outputs=num_outputs, image_size=image_size, **kwargs)
    except TypeError as error:
        raise ConfigError(f"invalid options {sorted(kwargs)} for model.arch {arch!r}: {error}") from error


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Return the parameter names of ``model`` grouped by layer, input layer first.

    Every trainable parameter appears in exactly one layer.

    Raises:
        ConfigError: the model has no ``layer_groups`` method, or a parameter matches no prefix or
            several layers.
    """
    if not hasattr(model, "layer_groups"):
        raise ConfigError(f"{type(model).__name__} does not define layer_groups()")
    prefixes = model.layer_groups()
    groups: list[list[str]] = [[] for _ in prefixes]
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        hits = [i for i, layer in enumerate(prefixes) if any(name.startswith(p) for p in layer)]
        if len(hits) != 1:
            raise ConfigError(
                f"parameter {name!r} of {type(model).__name__} matches {len(hits)} layers; "
                f"layer_groups() must assign each parameter to exactly one layer"
            )
        groups[hits[0]].append(name)
    return groups
