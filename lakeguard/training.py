"""Utility training and scoring shared by the attack recipes and the sanitizer.

Binary and multi-class tasks (ordinal included) train with cross-entropy over ``num_outputs``
logits, multi-label tasks with a per-label binary cross-entropy. Scores are probabilities:
softmax for single-label tasks, sigmoid per label for multi-label tasks, as MedMNIST evaluates.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lakeguard.errors import ConfigError
from lakeguard.tasks import Task

_logger = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> torch.device:
    """Return the device to run on: ``"auto"`` takes CUDA when available, else the CPU.

    Raises:
        ConfigError: ``requested`` names CUDA on a machine without it, or is not a device.
    """
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(requested)
    except RuntimeError as error:
        raise ConfigError(f"invalid device {requested!r}; use auto, cpu or cuda[:N]") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {requested!r} requested but CUDA is not available; use device=auto or cpu")
    return device


def task_loss(logits: torch.Tensor, labels: torch.Tensor, task: Task) -> torch.Tensor:
    """Mean classification loss of logits (N, K) against labels (N, 1) or (N, L)."""
    if task.is_multi_label:
        return F.binary_cross_entropy_with_logits(logits, labels.float())
    return F.cross_entropy(logits, labels[:, 0])


def batches(n: int, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    """Yield shuffled index batches covering ``range(n)`` once."""
    order = torch.randperm(n, generator=generator)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


def check_finite(loss: torch.Tensor, where: str) -> None:
    """Raise when a loss is NaN or infinite: training cannot recover from that state."""
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"{where}: loss is {loss.item()}; lower the learning rate")


def train_classifier(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    task: Task,
    *,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int,
    seed: int,
    device: torch.device,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    after_step: Callable[[], None] | None = None,
    log_prefix: str = "train",
) -> list[float]:
    """Train ``model`` on images (N, C, H, W) in [0, 1] for ``epochs``; return the mean loss per epoch.

    ``scheduler`` steps once per batch. ``after_step`` runs after every optimizer step, which is
    where an attack recipe interleaves its own objective.
    """
    generator = torch.Generator().manual_seed(seed)
    model.to(device).train()
    history = []
    for epoch in range(1, epochs + 1):
        started = time.perf_counter()
        total, seen = 0.0, 0
        for index in batches(len(images), batch_size, generator):
            x, y = images[index].to(device), labels[index].to(device)
            loss = task_loss(model(x), y, task)
            check_finite(loss, f"{log_prefix} epoch {epoch}")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if scheduler is not None:
                scheduler.step()
            if after_step is not None:
                after_step()
            total += loss.item() * len(index)
            seen += len(index)
        history.append(total / seen)
        elapsed = time.perf_counter() - started
        if epoch == 1 or epoch == epochs or epoch % max(1, epochs // 10) == 0:
            _logger.info(
                "%s epoch %d/%d: loss %.4f, %.1f s, %.0f samples/s",
                log_prefix, epoch, epochs, history[-1], elapsed, seen / max(elapsed, 1e-9),
            )
    model.eval()
    return history


@torch.no_grad()
def predict_scores(
    model: nn.Module, images: torch.Tensor, task: Task, *, device: torch.device, batch_size: int = 512
) -> np.ndarray:
    """Return probabilities (N, K): softmax for single-label tasks, sigmoid for multi-label tasks."""
    model.to(device).eval()
    chunks = []
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size].to(device)).float()
        probs = torch.sigmoid(logits) if task.is_multi_label else torch.softmax(logits, dim=1)
        chunks.append(probs.cpu())
    return torch.cat(chunks).numpy()
