"""The audit of one model: canary ground truth when known, target-free probes, unread tensors."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from lakeguard.attacks.transpose import Canaries
from lakeguard.audit.baseline import ClassMeanBaseline
from lakeguard.audit.canary import CanaryScore, score_canaries
from lakeguard.audit.probes import ProbeResult, probe_codes, run_probes
from lakeguard.audit.tensors import find_unread_tensors
from lakeguard.tasks import Task

_logger = logging.getLogger(__name__)


@dataclass
class AuditResult:
    """Everything the audit measured on one model.

    Attributes:
        stage: ``"trained"`` or ``"sanitized"``.
        canary: ground-truth score, or None without canaries or a transposed pass.
        probes: probe outcome, or None when the architecture has no transposed pass.
        unread_tensors: state-dict tensors that never affect the output, plus tensors in the
            model file that the architecture does not have (prefixed ``file:``).
        reconstructions: canary reconstructions (M, C, H, W), for the opt-in image grid only.
    """

    stage: str
    dataset: str
    arch: str
    model_sha256: str
    canary: CanaryScore | None
    probes: ProbeResult | None
    unread_tensors: list[str] = field(default_factory=list)
    reconstructions: torch.Tensor | None = None

    def to_dict(self, *, with_indices: bool = False) -> dict:
        """Return the JSON-ready record; per-image indices only when ``with_indices`` is set."""
        return {
            "schema": "lakeguard.audit/v1",
            "stage": self.stage,
            "dataset": self.dataset,
            "arch": self.arch,
            "model_sha256": self.model_sha256,
            "canary": self.canary.to_dict() if self.canary else None,
            "probes": self.probes.to_dict(with_indices=with_indices) if self.probes else None,
            "unread_tensors": list(self.unread_tensors),
        }

    def leakage_summary(self) -> dict:
        """Return the leakage numbers of ``summary.json`` and the gate (None where not measured)."""
        return {
            "ssim": self.canary.ssim if self.canary else None,
            "psnr": self.canary.psnr if self.canary else None,
            "baseline_ssim": self.canary.baseline_ssim if self.canary else None,
            "reidentification_rate": self.canary.reidentification_rate if self.canary else None,
            "probe_matches": self.probes.matches if self.probes else None,
        }


def audit_model(
    model: nn.Module,
    *,
    stage: str,
    dataset: str,
    arch: str,
    model_sha256: str,
    train_images: torch.Tensor,
    train_labels: np.ndarray,
    task: Task,
    num_outputs: int,
    canaries: Canaries | None,
    extra_tensors: list[str],
    margin: float,
    codes_per_class: int,
    random_codes: int,
    seed: int,
    device: torch.device,
    baseline: ClassMeanBaseline | None = None,
) -> AuditResult:
    """Audit ``model`` for memorized training images.

    Args:
        model: the model under audit, in eval mode.
        stage: label of the record, ``"trained"`` or ``"sanitized"``.
        train_images: training split (N, C, H, W) in [0, 1], the images a leak would reveal.
        train_labels: training labels (N, 1) or (N, L).
        canaries: ground truth from lakeguard's attack recipe, or None for a foreign model.
        extra_tensors: tensors of the model file that the architecture does not have.
        margin: SSIM margin above the fitted class-mean baseline (from the gate policy).
        codes_per_class: bound of the Gray-code enumeration per class.
        random_codes: random probe codes in addition.
        baseline: a precomputed baseline of the same training split, to skip recomputing it.
    """
    started = time.perf_counter()
    if baseline is None:
        baseline = ClassMeanBaseline.fit(train_images, train_labels, task, num_outputs)
    transposable = getattr(model, "has_transposed_path", False)

    canary_score, reconstructions = None, None
    if canaries is not None and transposable:
        canary_score, reconstructions = score_canaries(model, canaries, train_images, baseline, device=device)
        _logger.info("audit %s: canaries %s", stage, canary_score.to_dict())

    probe_result = None
    if transposable:
        codes = probe_codes(num_outputs, task, codes_per_class=codes_per_class, random_codes=random_codes, seed=seed)
        _logger.info("audit %s: decoding %d probe codes against %d training images", stage, len(codes), len(train_images))
        probe_result = run_probes(model, train_images, baseline, codes, margin=margin, device=device)
        _logger.info("audit %s: probes %s", stage, probe_result.to_dict())

    unread = find_unread_tensors(model, train_images[:8], device=device)
    unread += [f"file:{name}" for name in extra_tensors]
    if unread:
        _logger.warning("audit %s: tensors never read by the forward pass: %s", stage, unread)
    _logger.info("audit %s finished in %.1f s", stage, time.perf_counter() - started)
    return AuditResult(
        stage=stage,
        dataset=dataset,
        arch=arch,
        model_sha256=model_sha256,
        canary=canary_score,
        probes=probe_result,
        unread_tensors=unread,
        reconstructions=reconstructions,
    )
