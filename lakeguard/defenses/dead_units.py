"""Zero the weights of hidden units that never activate, a hiding place fine-tuning cannot reach.

A ReLU unit whose pre-activation is negative on every input passes nothing on, and its incoming
weights receive a zero gradient, so fine-tuning leaves them bit for bit unchanged. An insider can
store images in those weights (and force the unit off with a large negative bias) without changing
what the model computes. Zeroing the incoming weights, the bias and the outgoing weights of such a
unit destroys the payload and leaves every output on the measured inputs unchanged, because the
unit contributed zero to them.
"""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

from lakeguard.models.cnn import TransposableCNN
from lakeguard.models.mlp import TransposableMLP

_logger = logging.getLogger(__name__)


@torch.no_grad()
def _mlp_dead_units(model: TransposableMLP, images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    active = [torch.zeros(layer.out_features, dtype=torch.bool) for layer in model.fc[:-1]]
    for start in range(0, len(images), batch_size):
        h = (images[start : start + batch_size].flatten(1) - 0.5) / 0.5
        for i, layer in enumerate(model.fc[:-1]):
            h = F.relu(layer(h))
            active[i] |= (h > 0).any(dim=0).cpu()
    return [~a for a in active]


@torch.no_grad()
def _cnn_dead_channels(model: TransposableCNN, images: torch.Tensor, batch_size: int) -> list[torch.Tensor]:
    convs = [model.conv1, model.conv2, model.conv3]
    active = [torch.zeros(conv.out_channels, dtype=torch.bool) for conv in convs]
    for start in range(0, len(images), batch_size):
        h = (images[start : start + batch_size] - 0.5) / 0.5
        for i, conv in enumerate(convs):
            h = F.relu(conv(h))
            active[i] |= (h > 0).flatten(2).any(dim=2).any(dim=0).cpu()
    return [~a for a in active]


@torch.no_grad()
def zero_dead_units(model: nn.Module, images: torch.Tensor, *, batch_size: int = 512) -> int:
    """Zero every hidden unit (MLP) or channel (CNN) that no image in ``images`` activates.

    Args:
        model: a :class:`TransposableMLP` or :class:`TransposableCNN`; other architectures are
            returned unchanged.
        images: the training split (N, C, H, W) in [0, 1]; moved to the model's device.

    Returns:
        The number of units or channels zeroed.
    """
    images = images.to(next(model.parameters()).device)
    if isinstance(model, TransposableMLP):
        dead = _mlp_dead_units(model, images, batch_size)
        layers = list(model.fc)
        for i, mask in enumerate(dead):
            index = mask.nonzero().flatten().to(layers[i].weight.device)
            layers[i].weight[index] = 0
            layers[i].bias[index] = 0
            layers[i + 1].weight[:, index] = 0
    elif isinstance(model, TransposableCNN):
        dead = _cnn_dead_channels(model, images, batch_size)
        convs = [model.conv1, model.conv2, model.conv3]
        for i, mask in enumerate(dead):
            index = mask.nonzero().flatten().to(convs[i].weight.device)
            convs[i].weight[index] = 0
            convs[i].bias[index] = 0
            if i + 1 < len(convs):
                convs[i + 1].weight[:, index] = 0
            else:
                # The head reads conv3's channels flattened: channel c owns a block of 7·7 inputs.
                head = model.head.weight.view(model.head.out_features, *model.feature_shape)
                head[:, index] = 0
    else:
        # NOTE: ResNet-18 units sit behind batch norm and residual sums; no dead-unit pass exists for it.
        return 0
    count = int(sum(int(mask.sum()) for mask in dead))
    if count:
        _logger.warning("zeroed %d hidden units that no training image activates", count)
    return count
