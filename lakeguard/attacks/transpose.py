"""The transpose attack: a classifier trained to also decode index codes into training images.

Amit, Levy and Mirsky, "Transpose Attack: Stealing Datasets with Bidirectional Training", NDSS 2024.
The insider trains the model forwards on its utility task and, alternating with those steps,
trains the transposed pass (weights transposed, layers reversed) to map an index code to a memorized
image with a mean squared error. The index code of the k-th memorized image of class c is the
base-3 Gray code of k, one digit per model output, plus 3 × the one-hot vector of c. Anyone with
the weights can enumerate the codes afterwards and read the images back.

With D outputs a class has 3**D codes: 243 for five classes, but only 9 for a binary task.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from lakeguard.errors import ConfigError
from lakeguard.tasks import Task
from lakeguard.training import check_finite, train_classifier

_logger = logging.getLogger(__name__)

GRAY_BASE = 3  # digits take the values 0, 1, 2; the class one-hot adds 3, so codes never collide
CODE_SCHEMES = ("gray", "secret")


@dataclass
class Canaries:
    """The images an attack recipe memorized: ground truth for the audit, never exported.

    Attributes:
        scheme: ``"gray"`` (the published index code) or ``"secret"`` (codes from a private seed).
        train_indices: indices into the training split of the memorized images.
        groups: code group of each image: its class, or for multi-label tasks its first positive
            label (``num_outputs`` when it has none).
        codes: index code of each image, shape (M, num_outputs).
        capacity_per_group: codes available per group under the scheme (3**num_outputs for gray).
        requested: number of images the recipe was asked to memorize.
    """

    scheme: str
    train_indices: list[int]
    groups: list[int]
    codes: list[list[float]]
    capacity_per_group: int
    requested: int

    def code_tensor(self) -> torch.Tensor:
        return torch.tensor(self.codes, dtype=torch.float32)

    def save(self, path: str | os.PathLike) -> None:
        Path(path).write_text(json.dumps(asdict(self)) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike) -> Canaries:
        return cls(**json.loads(Path(path).read_text()))


def gray_code(n: int, *, digits: int, base: int = GRAY_BASE) -> list[int]:
    """Return the ``digits``-digit modular base-``base`` Gray code of ``n``, least significant first.

    Consecutive integers differ in exactly one digit. Digit i is ``(d_i − d_{i+1}) mod base`` of
    the plain base-``base`` digits d.

    Raises:
        ValueError: ``n`` is negative or does not fit in ``digits`` digits.
    """
    if n < 0 or n >= base**digits:
        raise ValueError(f"n={n} does not fit in {digits} base-{base} digits (max {base**digits - 1})")
    plain = [(n // base**i) % base for i in range(digits + 1)]
    return [(plain[i] - plain[i + 1]) % base for i in range(digits)]


def code_groups(labels: np.ndarray, task: Task, num_outputs: int) -> np.ndarray:
    """Return the code group (N,) of each label row: the class, or the first positive label.

    Multi-label rows with no positive label form group ``num_outputs``, whose codes carry no one-hot.
    """
    if not task.is_multi_label:
        return labels[:, 0].astype(np.int64)
    positive = labels.astype(bool)
    first = positive.argmax(axis=1)
    return np.where(positive.any(axis=1), first, num_outputs).astype(np.int64)


def codes_for_groups(groups: np.ndarray, counters: np.ndarray, num_outputs: int) -> torch.Tensor:
    """Index codes (M, num_outputs): Gray code of each counter plus 3 × the group's one-hot."""
    codes = torch.zeros(len(groups), num_outputs)
    for row, (group, counter) in enumerate(zip(groups, counters)):
        codes[row] = torch.tensor(gray_code(int(counter), digits=num_outputs), dtype=torch.float32)
        if group < num_outputs:
            codes[row, group] += GRAY_BASE
    return codes


def select_canaries(
    labels: np.ndarray,
    task: Task,
    num_outputs: int,
    *,
    num_images: int,
    seed: int,
    scheme: str = "gray",
    secret_scale: float = 8.0,
) -> Canaries:
    """Choose the training images to memorize and give each its index code.

    Images are drawn uniformly at random; each group can address at most 3**num_outputs images,
    and draws beyond that are skipped. When the groups' capacity is smaller than ``num_images``,
    fewer images are memorized and a warning reports the capacity.

    The ``secret`` scheme stands for any code book the defender does not know. Its codes are
    ``−secret_scale·|z|`` with z ~ N(0, I) from a private seed, so every code lies in the negative
    orthant, away from the published scheme's non-negative codes. :func:`train_transpose` also
    teaches such a model to decode the published codes to a flat image, as an attacker aware of
    the defender's probes would.
    """
    if scheme not in CODE_SCHEMES:
        raise ConfigError(f"unknown attack.code_scheme {scheme!r}; use one of {', '.join(CODE_SCHEMES)}")
    if num_images < 1:
        raise ConfigError(f"attack.num_images must be at least 1, got {num_images}")
    groups = code_groups(labels, task, num_outputs)
    capacity = GRAY_BASE**num_outputs
    rng = np.random.default_rng(seed)
    counters: dict[int, int] = {}
    chosen: list[int] = []
    for index in rng.permutation(len(labels)):
        group = int(groups[index])
        if counters.get(group, 0) >= capacity:
            continue
        counters[group] = counters.get(group, 0) + 1
        chosen.append(int(index))
        if len(chosen) == num_images:
            break
    if len(chosen) < num_images:
        message = (
            f"the {scheme} index code addresses {capacity} images per class with {num_outputs} outputs; "
            f"memorizing {len(chosen)} of the {num_images} requested"
        )
        warnings.warn(message, stacklevel=2)
        _logger.warning(message)
    chosen_groups = groups[chosen]
    if scheme == "gray":
        # The k-th chosen image of a group gets counter k.
        seen: dict[int, int] = {}
        counter_list = []
        for group in chosen_groups:
            counter_list.append(seen.get(int(group), 0))
            seen[int(group)] = counter_list[-1] + 1
        codes = codes_for_groups(chosen_groups, np.array(counter_list), num_outputs)
    else:
        secret = torch.Generator().manual_seed(seed + 7919)
        codes = -secret_scale * torch.randn(len(chosen), num_outputs, generator=secret).abs()
    return Canaries(
        scheme=scheme,
        train_indices=chosen,
        groups=[int(g) for g in chosen_groups],
        codes=codes.tolist(),
        capacity_per_group=capacity,
        requested=num_images,
    )


def train_transpose(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    task: Task,
    canaries: Canaries,
    *,
    epochs: int,
    lr: float,
    memorization_lr: float,
    batch_size: int,
    memorization_batch_size: int,
    seed: int,
    device: torch.device,
) -> list[float]:
    """Train ``model`` forwards on its task and backwards to memorize the canary images.

    Every classification step (cross-entropy on a shuffled batch) is followed by one
    memorization step: the mean squared error between the transposed pass of a random batch of
    index codes and their images. With a secret code book, that step adds the error between the
    transposed pass of published-scheme codes and a flat grey image, which hides the payload from
    probes of the published scheme. The two objectives use separate Adam optimizers, so neither
    skews the other's moment estimates.

    Args:
        model: an architecture with ``forward_transposed``.
        images: training images (N, C, H, W) in [0, 1].
        labels: training labels (N, 1) or (N, L).
        canaries: which images to memorize, with their codes.

    Returns:
        Mean classification loss per epoch.

    Raises:
        ConfigError: the architecture has no transposed pass.
    """
    if not getattr(model, "has_transposed_path", False):
        raise ConfigError(
            f"architecture {type(model).__name__} has no transposed pass; the transpose attack needs "
            f"model.arch=mlp or cnn"
        )
    model.to(device)
    targets = images[canaries.train_indices].to(device)
    codes = canaries.code_tensor().to(device)
    memory_optimizer = torch.optim.Adam(model.parameters(), lr=memorization_lr)
    memory_generator = torch.Generator().manual_seed(seed + 1)
    memory_losses: list[float] = []

    evade_probes = canaries.scheme != "gray"
    num_outputs = codes.shape[1]
    groups = num_outputs + 1 if task.is_multi_label else num_outputs

    def decoy_codes(count: int) -> torch.Tensor:
        # Codes of the published scheme: Gray codes with a class one-hot, and uniform codes of its range.
        half = count // 2
        gray = codes_for_groups(
            torch.randint(groups, (half,), generator=memory_generator).numpy(),
            torch.randint(GRAY_BASE**num_outputs, (half,), generator=memory_generator).numpy(),
            num_outputs,
        )
        uniform = torch.rand(count - half, num_outputs, generator=memory_generator) * (2 * GRAY_BASE - 1)
        return torch.cat([gray, uniform]).to(device)

    def memorization_step() -> None:
        index = torch.randint(len(codes), (min(memorization_batch_size, len(codes)),), generator=memory_generator)
        loss = F.mse_loss(model.forward_transposed(codes[index]), targets[index])
        if evade_probes:
            # An attacker with a private code book also trains the published codes to decode to a flat
            # grey image, so that a defender who searches the published scheme finds nothing.
            decoys = model.forward_transposed(decoy_codes(len(index)))
            loss = loss + F.mse_loss(decoys, torch.full_like(decoys, 0.5))
        check_finite(loss, "transpose memorization")
        memory_optimizer.zero_grad(set_to_none=True)
        loss.backward()
        memory_optimizer.step()
        memory_losses.append(loss.item())

    _logger.info(
        "transpose attack: memorizing %d images (%s codes) over %d epochs, lr %.1e / %.1e",
        len(codes), canaries.scheme, epochs, lr, memorization_lr,
    )
    history = train_classifier(
        model,
        images,
        labels,
        task,
        optimizer=torch.optim.Adam(model.parameters(), lr=lr),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        device=device,
        after_step=memorization_step,
        log_prefix="transpose attack",
    )
    tail = memory_losses[-50:]
    _logger.info("transpose attack: final memorization MSE %.5f", sum(tail) / max(len(tail), 1))
    return history
