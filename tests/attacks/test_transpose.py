"""The transpose attack's index code, canary choice and, on real images, that it memorizes."""

import numpy as np
import pytest
import torch

from lakeguard.attacks import code_groups, codes_for_groups, gray_code, select_canaries, train_transpose
from lakeguard.data import load_dataset
from lakeguard.errors import ConfigError
from lakeguard.metrics.image import fitted_ssim
from lakeguard.models import build_model
from lakeguard.tasks import Task


def test_gray_code_neighbours_differ_in_one_digit():
    codes = [gray_code(n, digits=5) for n in range(3**5)]
    assert len({tuple(c) for c in codes}) == 3**5
    for a, b in zip(codes, codes[1:]):
        assert sum(x != y for x, y in zip(a, b)) == 1


def test_gray_code_small_values():
    assert [gray_code(n, digits=2) for n in range(4)] == [[0, 0], [1, 0], [2, 0], [2, 1]]


def test_gray_code_out_of_range():
    with pytest.raises(ValueError, match="does not fit in 2 base-3 digits"):
        gray_code(9, digits=2)


def test_index_code_adds_three_times_one_hot():
    codes = codes_for_groups(np.array([0, 2]), np.array([0, 1]), num_outputs=3)
    assert codes.tolist() == [[3, 0, 0], [1, 0, 3]]


def test_multi_label_groups_use_first_positive_label():
    labels = np.array([[0, 1, 1], [0, 0, 0], [1, 0, 0]])
    assert code_groups(labels, Task.MULTI_LABEL, 3).tolist() == [1, 3, 0]


def test_canaries_have_distinct_codes_and_respect_capacity():
    labels = load_dataset("retinamnist").train.labels
    canaries = select_canaries(labels, Task.ORDINAL, 5, num_images=200, seed=3)
    assert len(canaries.train_indices) == 200
    assert len({tuple(c) for c in canaries.codes}) == 200
    assert canaries.capacity_per_group == 243
    assert [int(labels[i, 0]) for i in canaries.train_indices] == canaries.groups


def test_binary_capacity_nine_per_class():
    labels = load_dataset("breastmnist").train.labels
    with pytest.warns(UserWarning, match="addresses 9 images per class with 2 outputs; memorizing 18 of the 100"):
        canaries = select_canaries(labels, Task.BINARY, 2, num_images=100, seed=0)
    assert len(canaries.train_indices) == 18
    assert canaries.requested == 100


def test_secret_scheme_codes_are_off_the_gray_grid():
    labels = load_dataset("retinamnist").train.labels
    canaries = select_canaries(labels, Task.ORDINAL, 5, num_images=20, seed=0, scheme="secret")
    codes = canaries.code_tensor()
    assert not torch.all(codes == codes.round())
    assert torch.all(codes < 0), "secret codes lie outside the non-negative orthant of the published scheme"


def test_unknown_scheme_is_rejected():
    with pytest.raises(ConfigError, match="unknown attack.code_scheme 'xor'"):
        select_canaries(np.zeros((4, 1), dtype=int), Task.BINARY, 2, num_images=2, seed=0, scheme="xor")


def test_attack_needs_transposed_pass():
    model = build_model("resnet18", in_channels=1, num_outputs=2)
    labels = np.zeros((4, 1), dtype=int)
    canaries = select_canaries(labels, Task.BINARY, 2, num_images=2, seed=0)
    with pytest.raises(ConfigError, match="no transposed pass"):
        train_transpose(
            model, torch.rand(4, 1, 28, 28), torch.zeros(4, 1, dtype=torch.long), Task.BINARY, canaries,
            epochs=1, lr=1e-3, memorization_lr=1e-3, batch_size=2, memorization_batch_size=2, seed=0,
            device=torch.device("cpu"),
        )


def test_memorization_raises_reconstruction_ssim_on_real_images():
    data = load_dataset("breastmnist")
    images, labels = data.train.tensors()
    images, labels = images[:128], labels[:128]
    canaries = select_canaries(data.train.labels[:128], Task.BINARY, 2, num_images=8, seed=0)
    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_outputs=2, hidden=256)
    targets = images[canaries.train_indices]
    with torch.no_grad():
        before = fitted_ssim(model.forward_transposed(canaries.code_tensor()), targets).mean().item()
    train_transpose(
        model, images, labels, Task.BINARY, canaries,
        epochs=30, lr=1e-3, memorization_lr=1e-3, batch_size=32, memorization_batch_size=8, seed=0,
        device=torch.device("cpu"),
    )
    with torch.no_grad():
        after = fitted_ssim(model.forward_transposed(canaries.code_tensor()), targets).mean().item()
    assert after > before + 0.2, (before, after)
