"""Fully connected classifier with a transposed pass, in the style of the transpose attack.

Amit, Levy and Mirsky, "Transpose Attack: Stealing Datasets with Bidirectional Training", NDSS 2024.
The transposed pass reuses the forward weights, transposed, in reverse layer order, so a model
trained on both directions carries a decoder from index codes to images inside its classifier.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TransposableMLP(nn.Module):
    """MLP classifier ``(N, C, H, W) → (N, num_outputs)`` with a transposed pass back to images.

    Args:
        in_channels: image channels C.
        num_outputs: classes, or labels for multi-label tasks.
        image_size: height and width H = W of the input.
        hidden: width of each hidden layer.
        depth: number of hidden layers.

    The layers are ``fc.0 … fc.{depth}``; ``fc.0`` reads the pixels and ``fc.{depth}`` is the head.
    """

    has_transposed_path = True

    def __init__(
        self, *, in_channels: int, num_outputs: int, image_size: int = 28, hidden: int = 1024, depth: int = 3
    ) -> None:
        super().__init__()
        if depth < 1:
            raise ValueError(f"depth must be at least 1, got {depth}")
        self.image_shape = (in_channels, image_size, image_size)
        widths = [in_channels * image_size * image_size] + [hidden] * depth + [num_outputs]
        self.fc = nn.ModuleList(nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify images ``x`` (N, C, H, W) in [0, 1]; return logits (N, num_outputs)."""
        h = (x.flatten(1) - 0.5) / 0.5
        for layer in self.fc[:-1]:
            h = F.relu(layer(h))
        return self.fc[-1](h)

    def forward_transposed(self, code: torch.Tensor) -> torch.Tensor:
        """Decode index codes (N, num_outputs) into images (N, C, H, W) in [0, 1].

        Each layer applies its own weight transposed. Biases belong to the forward direction and
        are not used here, so the transposed pass reads no tensor that the forward pass skips.
        """
        h = code
        layers = list(self.fc)[::-1]
        for i, layer in enumerate(layers):
            h = F.linear(h, layer.weight.t())
            if i < len(layers) - 1:
                h = F.relu(h)
        return torch.sigmoid(h).view(-1, *self.image_shape)

    def layer_groups(self) -> list[list[str]]:
        """Parameter-name prefixes per layer, input first: one group per linear layer."""
        return [[f"fc.{i}."] for i in range(len(self.fc))]
