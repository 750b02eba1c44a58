"""ResNet-18 adapted to 28×28 inputs, as in the MedMNIST v2 benchmarks.

He et al., "Deep Residual Learning for Image Recognition", CVPR 2016. MedMNIST (Yang et al., 2023)
trains it on 28×28 images with a 3×3, stride-1 stem and no max-pooling, so the four stages see
28, 14, 7 and 4 pixels. It has no transposed pass: the audit of this architecture is limited to
the tensors its forward pass never reads.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch norm and an identity or 1×1 projection shortcut."""

    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 for (N, C, 28, 28) inputs in [0, 1]; returns logits (N, num_outputs).

    Args:
        in_channels: image channels C.
        num_outputs: classes, or labels for multi-label tasks.
        image_size: height and width of the input (28 for MedMNIST).
    """

    has_transposed_path = False

    def __init__(self, *, in_channels: int, num_outputs: int, image_size: int = 28) -> None:
        super().__init__()
        self.image_shape = (in_channels, image_size, image_size)
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        stages = []
        in_planes = 64
        for planes, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(in_planes, planes, stride), BasicBlock(planes, planes, 1)))
            in_planes = planes
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(512, num_outputs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.bn1(self.conv1((x - 0.5) / 0.5)))
        h = self.layer4(self.layer3(self.layer2(self.layer1(h))))
        h = F.adaptive_avg_pool2d(h, 1).flatten(1)
        return self.fc(h)

    def layer_groups(self) -> list[list[str]]:
        """Parameter-name prefixes per layer, input first.

        The stem (conv1, bn1) is layer 0, each of the eight residual blocks is one layer
        (layer1.0 … layer4.1), and the classifier ``fc`` is layer 9.
        """
        groups = [["conv1.", "bn1."]]
        for stage in range(1, 5):
            groups.extend([[f"layer{stage}.{block}."] for block in range(2)])
        groups.append(["fc."])
        return groups
