"""Target-free probes: search the transposed pass for training images without knowing the canaries.

The probes decode every code of the published transpose-attack scheme up to a bound per class
(base-3 Gray code of a counter plus 3 × the class one-hot), plus random codes from the same value
range, and match each output with its nearest training image by fitted SSIM. A training image
counts as leaked when some output matches it better than its own class-mean image does, by more
than a margin. The search covers the published code scheme only: a model trained with a secret
code book escapes it, and only sanitizing removes such a payload.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from lakeguard.attacks.transpose import GRAY_BASE, codes_for_groups
from lakeguard.audit.baseline import ClassMeanBaseline
from lakeguard.audit.canary import reconstruct
from lakeguard.metrics.image import nearest_by_fitted_ssim
from lakeguard.tasks import Task


@dataclass
class ProbeResult:
    """Outcome of a probe search.

    Attributes:
        codes_searched: number of codes decoded.
        matches: distinct training images matched above their baseline plus the margin.
        margin: SSIM margin above the fitted class-mean baseline.
        mean_best_ssim: mean over outputs of the fitted SSIM to the nearest training image.
        mean_best_baseline_ssim: mean over outputs of that nearest image's own baseline.
        matched_train_indices: the matched training indices, sorted (kept out of published records).
    """

    codes_searched: int
    matches: int
    margin: float
    mean_best_ssim: float
    mean_best_baseline_ssim: float
    matched_train_indices: list[int] = field(default_factory=list)

    def to_dict(self, *, with_indices: bool = False) -> dict:
        data = asdict(self)
        if not with_indices:
            data.pop("matched_train_indices")
        return data


def probe_codes(
    num_outputs: int, task: Task, *, codes_per_class: int, random_codes: int, seed: int
) -> torch.Tensor:
    """Return probe codes (P, num_outputs): Gray codes 0 … bound−1 per group, then random codes.

    The bound is the smaller of ``codes_per_class`` and the scheme's 3**num_outputs codes per
    group. Random codes are uniform in [0, 5] per digit, the value range of the scheme.
    """
    num_groups = num_outputs + 1 if task.is_multi_label else num_outputs
    bound = min(codes_per_class, GRAY_BASE**num_outputs)
    groups = np.repeat(np.arange(num_groups), bound)
    counters = np.tile(np.arange(bound), num_groups)
    enumerated = codes_for_groups(groups, counters, num_outputs)
    generator = torch.Generator().manual_seed(seed)
    sampled = torch.rand(random_codes, num_outputs, generator=generator) * (2 * GRAY_BASE - 1)
    return torch.cat([enumerated, sampled])


def run_probes(
    model: nn.Module,
    train_images: torch.Tensor,
    baseline: ClassMeanBaseline,
    codes: torch.Tensor,
    *,
    margin: float,
    device: torch.device,
) -> ProbeResult:
    """Decode ``codes`` and count the training images matched above baseline plus ``margin``."""
    outputs = reconstruct(model, codes, device=device)
    best, nearest = nearest_by_fitted_ssim(outputs, train_images)
    nearest_baseline = baseline.per_image_ssim[nearest]
    leaked = best > nearest_baseline + margin
    matched = sorted({int(i) for i in nearest[leaked]})
    return ProbeResult(
        codes_searched=len(codes),
        matches=len(matched),
        margin=margin,
        mean_best_ssim=float(best.mean()),
        mean_best_baseline_ssim=float(nearest_baseline.mean()),
        matched_train_indices=matched,
    )
