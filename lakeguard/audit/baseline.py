"""The class-mean baseline: how well an image is matched without any memorization.

Medical images of one class look alike (every fundus photograph is an orange disc), so even the
mean image of a class reaches a high SSIM against any member. A reconstruction only shows leakage
when it beats that baseline. The mean image is fitted to each target with the same per-image affine
intensity map as the reconstructions, so both sides are compared alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from lakeguard.attacks.transpose import code_groups
from lakeguard.metrics.image import fitted_ssim
from lakeguard.tasks import Task


@dataclass
class ClassMeanBaseline:
    """Class-mean images and the fitted SSIM of each training image to its own class mean.

    Attributes:
        groups: code group of each training image (N,): its class, or first positive label.
        means: mean image per group (G, C, H, W) in [0, 1]; a group without images stays zero.
        per_image_ssim: fitted SSIM of the group mean to each training image (N,).
    """

    groups: np.ndarray
    means: torch.Tensor
    per_image_ssim: torch.Tensor

    @classmethod
    def fit(cls, images: torch.Tensor, labels: np.ndarray, task: Task, num_outputs: int) -> ClassMeanBaseline:
        """Compute the baseline of training images (N, C, H, W) in [0, 1] with labels (N, 1) or (N, L)."""
        groups = code_groups(labels, task, num_outputs)
        num_groups = num_outputs + 1 if task.is_multi_label else num_outputs
        means = torch.zeros(num_groups, *images.shape[1:])
        for group in range(num_groups):
            members = torch.from_numpy(groups == group)
            if members.any():
                means[group] = images[members].mean(dim=0)
        per_image = torch.empty(len(images))
        for start in range(0, len(images), 1024):
            stop = start + 1024
            per_image[start:stop] = fitted_ssim(means[groups[start:stop]], images[start:stop])
        return cls(groups=groups, means=means, per_image_ssim=per_image)
