"""Small convolutional classifier with a transposed pass, in the style of the transpose attack.

Amit, Levy and Mirsky, NDSS 2024. The transposed pass runs the head's weight transposed, then each
convolution as a transposed convolution with the same kernel, in reverse order.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class TransposableCNN(nn.Module):
    """CNN classifier ``(N, C, 28, 28) → (N, num_outputs)`` with a transposed pass back to images.

    Layers, input first: ``conv1`` (C→32, 3×3, stride 2: 28→14), ``conv2`` (32→64, 3×3, stride 2:
    14→7), ``conv3`` (64→64, 3×3, stride 1: 7→7), ``head`` (64·7·7 → num_outputs).

    Args:
        in_channels: image channels C.
        num_outputs: classes, or labels for multi-label tasks.
        image_size: must be 28, which the stride pattern is built for.
        width: channels of the first convolution; the others use twice as many.
    """

    has_transposed_path = True

    def __init__(self, *, in_channels: int, num_outputs: int, image_size: int = 28, width: int = 32) -> None:
        super().__init__()
        if image_size != 28:
            raise ValueError(f"TransposableCNN expects 28×28 images, got image_size={image_size}")
        self.image_shape = (in_channels, image_size, image_size)
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=2, padding=1)
        self.conv2 = nn.Conv2d(width, 2 * width, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(2 * width, 2 * width, 3, stride=1, padding=1)
        self.feature_shape = (2 * width, 7, 7)
        self.head = nn.Linear(2 * width * 7 * 7, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Classify images ``x`` (N, C, 28, 28) in [0, 1]; return logits (N, num_outputs)."""
        h = (x - 0.5) / 0.5
        h = F.relu(self.conv1(h))  # (N, w, 14, 14)
        h = F.relu(self.conv2(h))  # (N, 2w, 7, 7)
        h = F.relu(self.conv3(h))  # (N, 2w, 7, 7)
        return self.head(h.flatten(1))

    def forward_transposed(self, code: torch.Tensor) -> torch.Tensor:
        """Decode index codes (N, num_outputs) into images (N, C, 28, 28) in [0, 1]."""
        h = F.linear(code, self.head.weight.t()).view(-1, *self.feature_shape)
        h = F.relu(F.conv_transpose2d(h, self.conv3.weight, stride=1, padding=1))
        # output_padding=1 restores the even sizes that a stride-2 convolution halved: 7→14→28.
        h = F.relu(F.conv_transpose2d(h, self.conv2.weight, stride=2, padding=1, output_padding=1))
        h = F.conv_transpose2d(h, self.conv1.weight, stride=2, padding=1, output_padding=1)
        return torch.sigmoid(h)

    def layer_groups(self) -> list[list[str]]:
        """Parameter-name prefixes per layer, input first: conv1, conv2, conv3, head."""
        return [["conv1."], ["conv2."], ["conv3."], ["head."]]
