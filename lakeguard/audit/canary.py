"""Canary ground truth: reconstructions scored against the images the attack recipe memorized.

Available only for models trained by lakeguard's own attack recipe, which records the memorized
training indices and their codes. Every score fits the reconstruction to the compared image with a
per-image affine intensity map first (an attacker reads a dimmed or inverted copy just as well).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from lakeguard.attacks.transpose import Canaries
from lakeguard.audit.baseline import ClassMeanBaseline
from lakeguard.metrics.image import affine_fit, fitted_ssim, nearest_by_fitted_ssim, psnr


@dataclass
class CanaryScore:
    """Leakage of the memorized images, averaged over them.

    Attributes:
        scheme: code scheme of the recipe.
        n: number of memorized images scored.
        ssim: mean fitted SSIM (data_range=1.0) of reconstructions to their targets.
        psnr: mean PSNR in dB of the fitted reconstructions (data_range=1.0); capped at 100 dB.
        baseline_ssim: mean fitted SSIM of the targets' class-mean images to the targets.
        reidentification_rate: fraction of reconstructions whose nearest training image by fitted
            SSIM is their target, or pixel-identical to it.
    """

    scheme: str
    n: int
    ssim: float
    psnr: float
    baseline_ssim: float
    reidentification_rate: float

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def reconstruct(model: nn.Module, codes: torch.Tensor, *, device: torch.device, batch_size: int = 512) -> torch.Tensor:
    """Run the transposed pass over codes (M, num_outputs); return images (M, C, H, W) on the CPU."""
    model.to(device).eval()
    outputs = [model.forward_transposed(codes[i : i + batch_size].to(device)).float().cpu() for i in range(0, len(codes), batch_size)]
    return torch.cat(outputs)


def score_canaries(
    model: nn.Module,
    canaries: Canaries,
    train_images: torch.Tensor,
    baseline: ClassMeanBaseline,
    *,
    device: torch.device,
) -> tuple[CanaryScore, torch.Tensor]:
    """Score the reconstructions of the memorized images against their targets.

    Args:
        model: a model with ``forward_transposed``.
        canaries: the recipe's memorized indices and codes.
        train_images: the training split (N, C, H, W) in [0, 1].
        baseline: class-mean baseline of the training split.

    Returns:
        The averaged score and the reconstructions (M, C, H, W), for an optional image grid.
    """
    indices = torch.tensor(canaries.train_indices, dtype=torch.long)
    targets = train_images[indices]
    recon = reconstruct(model, canaries.code_tensor(), device=device)

    ssim_values = fitted_ssim(recon, targets)
    psnr_values = psnr(affine_fit(recon, targets).clamp(0, 1), targets).clamp(max=100.0)
    baseline_values = baseline.per_image_ssim[indices]

    _, nearest = nearest_by_fitted_ssim(recon, train_images)
    same_index = nearest == indices
    identical = (train_images[nearest] == targets).flatten(1).all(dim=1)
    hits = same_index | identical

    score = CanaryScore(
        scheme=canaries.scheme,
        n=len(indices),
        ssim=float(ssim_values.mean()),
        psnr=float(psnr_values.mean()),
        baseline_ssim=float(baseline_values.mean()),
        reidentification_rate=float(hits.float().mean()),
    )
    return score, recon
