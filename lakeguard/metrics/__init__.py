"""Metrics of the audit: image similarity of reconstructions and utility of classifiers."""

from lakeguard.metrics.image import (
    affine_fit,
    fitted_ssim,
    nearest_by_fitted_ssim,
    pairwise_fitted_ssim,
    pairwise_mse,
    psnr,
    ssim,
)
from lakeguard.metrics.utility import (
    AucResult,
    PairedDifference,
    UtilityReport,
    accuracy,
    auc,
    evaluate_scores,
    paired_auc_difference,
)

__all__ = [
    "AucResult",
    "PairedDifference",
    "UtilityReport",
    "accuracy",
    "affine_fit",
    "auc",
    "evaluate_scores",
    "fitted_ssim",
    "nearest_by_fitted_ssim",
    "paired_auc_difference",
    "pairwise_fitted_ssim",
    "pairwise_mse",
    "psnr",
    "ssim",
]
