"""Tests of lakeguard.metrics.image against scikit-image, numpy and direct loops."""

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import lakeguard
from lakeguard.errors import DataError
from lakeguard.metrics.image import (
    affine_fit,
    fitted_ssim,
    nearest_by_fitted_ssim,
    pairwise_fitted_ssim,
    pairwise_mse,
    psnr,
    ssim,
)

RETINA_PATH = Path(lakeguard.__file__).parent / "data" / "default" / "retinamnist.npz"


def random_pair(n: int, channels: int, height: int, width: int, dtype: torch.dtype, seed: int):
    """Uniform noise x and a noisy copy y of it, both in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, channels, height, width, generator=generator, dtype=torch.float64)
    noise = 0.2 * torch.randn(n, channels, height, width, generator=generator, dtype=torch.float64)
    y = (x + noise).clamp(0, 1)
    return x.to(dtype), y.to(dtype)


def smooth_images(n: int, channels: int, height: int, width: int, dtype: torch.dtype, seed: int):
    """Smooth images in [0, 1]: 4x4 random grids upsampled bicubically, with flat clipped areas."""
    generator = torch.Generator().manual_seed(seed)
    grid = torch.rand(n, channels, 4, 4, generator=generator, dtype=torch.float64) * 1.4 - 0.2
    images = F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
    return images.clamp(0, 1).to(dtype)


def retina_images(count: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The first count RetinaMNIST training images as (count, 3, 28, 28) in [0, 1]."""
    with np.load(RETINA_PATH) as archive:
        images = archive["train_images"][:count]
    return torch.from_numpy(images).permute(0, 3, 1, 2).to(dtype) / 255


def skimage_ssim(x: torch.Tensor, y: torch.Tensor) -> np.ndarray:
    return np.array([
        structural_similarity(a.numpy(), b.numpy(), data_range=1.0, channel_axis=0)
        for a, b in zip(x, y)
    ])


def fitted_ssim_loop(outputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
    """fitted_ssim of every pair, one output at a time."""
    rows = [
        fitted_ssim(output.expand_as(references), references)
        for output in outputs[:, None]
    ]
    return torch.stack(rows)


# ---------------------------------------------------------------------------------------------
# ssim and psnr against scikit-image

SIZES = [(28, 28), (32, 20)]
DTYPES = [torch.float32, torch.float64]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("kind", ["random", "smooth"])
def test_ssim_matches_skimage(kind, channels, size, dtype):
    if kind == "random":
        x, y = random_pair(4, channels, *size, dtype, seed=0)
    else:
        x = smooth_images(4, channels, *size, dtype, seed=1)
        y = smooth_images(4, channels, *size, dtype, seed=2)

    ours = ssim(x, y, data_range=1.0)

    assert ours.shape == (4,)
    assert ours.dtype == dtype
    np.testing.assert_allclose(ours.double().numpy(), skimage_ssim(x, y), rtol=0, atol=1e-5)


def test_ssim_matches_skimage_on_retina():
    images = retina_images(16)

    ours = ssim(images[:8], images[8:])

    np.testing.assert_allclose(ours.double().numpy(), skimage_ssim(images[:8], images[8:]), atol=1e-5)


@pytest.mark.parametrize("win_size", [3, 5, 11])
def test_ssim_window_and_constants_match_skimage(win_size):
    x, y = random_pair(3, 3, 28, 28, torch.float64, seed=3)
    expected = [
        structural_similarity(
            a.numpy(), b.numpy(), data_range=2.0, channel_axis=0, win_size=win_size, K1=0.02, K2=0.05
        )
        for a, b in zip(x, y)
    ]

    ours = ssim(x, y, data_range=2.0, win_size=win_size, k1=0.02, k2=0.05)

    np.testing.assert_allclose(ours.numpy(), expected, atol=1e-10)


def test_ssim_of_identical_images_is_one():
    images = retina_images(4)

    assert torch.allclose(ssim(images, images), torch.ones(4))


@pytest.mark.parametrize("dtype", DTYPES)
def test_psnr_matches_skimage(dtype):
    x, y = random_pair(5, 3, 28, 28, dtype, seed=4)
    expected = [peak_signal_noise_ratio(a.numpy(), b.numpy(), data_range=1.0) for a, b in zip(x, y)]

    ours = psnr(x, y, data_range=1.0)

    assert ours.dtype == dtype
    np.testing.assert_allclose(ours.double().numpy(), expected, rtol=1e-5)


def test_psnr_of_identical_images_is_inf():
    images = retina_images(2)

    scores = psnr(images, images)

    assert torch.isinf(scores).all()
    assert (scores > 0).all()


# ---------------------------------------------------------------------------------------------
# affine_fit and fitted_ssim


def test_affine_fit_recovers_inverted_copy():
    references = retina_images(6, torch.float64)

    fitted = affine_fit(1 - references, references)

    torch.testing.assert_close(fitted, references, rtol=0, atol=1e-12)
    torch.testing.assert_close(fitted_ssim(1 - references, references), torch.ones(6, dtype=torch.float64))


def test_affine_fit_recovers_dimmed_copy():
    references = retina_images(6)
    dimmed = 0.25 * references + 0.1

    fitted = affine_fit(dimmed, references)

    torch.testing.assert_close(fitted, references, rtol=0, atol=1e-5)
    torch.testing.assert_close(fitted_ssim(dimmed, references), torch.ones(6), rtol=0, atol=1e-5)


def test_affine_fit_raises_ssim_of_inverted_copy():
    references = retina_images(6)
    inverted = 1 - references

    assert (ssim(inverted, references) < 0.5).all()
    assert (fitted_ssim(inverted, references) > 0.999).all()


def test_affine_fit_of_constant_is_reference_mean():
    _, y = random_pair(3, 3, 28, 28, torch.float64, seed=5)
    # The float64 mean of 2,352 copies of 0.6 is not exactly 0.6, so x - mean(x) is not exactly 0.
    x = torch.full_like(y, 0.6)

    fitted = affine_fit(x, y)

    expected = y.mean(dim=(1, 2, 3))[:, None, None, None].expand_as(y)
    torch.testing.assert_close(fitted, expected)


@pytest.mark.parametrize("dtype", DTYPES)
def test_affine_fit_matches_lstsq(dtype):
    x, y = random_pair(4, 3, 28, 28, dtype, seed=6)
    x = 0.5 * x  # the fit must not depend on x having y's scale

    fitted = affine_fit(x, y)

    for index in range(4):
        design = np.stack([x[index].double().numpy().ravel(), np.ones(x[index].numel())], axis=1)
        coefficients, *_ = np.linalg.lstsq(design, y[index].double().numpy().ravel(), rcond=None)
        expected = (design @ coefficients).reshape(x[index].shape)
        np.testing.assert_allclose(fitted[index].double().numpy(), expected, atol=1e-6)


def test_affine_fit_is_not_clipped():
    references = retina_images(2, torch.float64)
    # The stretched target lies partly outside [0, 1], so a clipped fit could not reproduce it.
    stretched = 2 * references - 0.5

    fitted = affine_fit(references, stretched)

    torch.testing.assert_close(fitted, stretched)
    assert fitted.min() < 0
    assert fitted.max() > 1


# ---------------------------------------------------------------------------------------------
# pairwise_fitted_ssim and nearest_by_fitted_ssim


def pairwise_inputs(channels: int, dtype: torch.dtype):
    """7 outputs (including a constant one and transformed references) and 9 references."""
    if channels == 3:
        references = retina_images(9, dtype)
    else:
        references = smooth_images(9, 1, 28, 28, dtype, seed=7)
    generator = torch.Generator().manual_seed(8)
    outputs = torch.rand(7, channels, 28, 28, generator=generator, dtype=torch.float64).to(dtype)
    outputs[1] = 1 - references[4]
    outputs[2] = 0.3 * references[7] + 0.2
    outputs[3] = 0.6
    outputs[4] = 0.5 * references[0] + 0.5 * outputs[4]
    return outputs, references


@pytest.mark.parametrize("chunk_size", [1, 5, 13, None])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("dtype", DTYPES)
def test_pairwise_fitted_ssim_matches_loop(dtype, channels, chunk_size):
    outputs, references = pairwise_inputs(channels, dtype)
    expected = fitted_ssim_loop(outputs, references)

    scores = pairwise_fitted_ssim(outputs, references, chunk_size=chunk_size)

    assert scores.shape == (7, 9)
    assert scores.dtype == dtype
    atol = 1e-5 if dtype == torch.float32 else 1e-10
    torch.testing.assert_close(scores, expected, rtol=0, atol=atol)


def test_pairwise_fitted_ssim_with_other_window_and_range():
    outputs, references = pairwise_inputs(3, torch.float64)
    outputs, references = 2 * outputs, 2 * references
    expected = torch.stack([
        fitted_ssim(output.expand_as(references), references, data_range=2.0, win_size=5, k1=0.02, k2=0.04)
        for output in outputs[:, None]
    ])

    scores = pairwise_fitted_ssim(outputs, references, data_range=2.0, win_size=5, k1=0.02, k2=0.04)

    torch.testing.assert_close(scores, expected, rtol=0, atol=1e-10)


def test_pairwise_fitted_ssim_finds_transformed_copies():
    outputs, references = pairwise_inputs(3, torch.float32)

    scores = pairwise_fitted_ssim(outputs, references)

    assert scores[1, 4] > 0.9999
    assert scores[2, 7] > 0.9999


@pytest.mark.parametrize("chunk_size", [1, 4, None])
def test_nearest_matches_pairwise_argmax(chunk_size):
    outputs, references = pairwise_inputs(3, torch.float64)
    scores = pairwise_fitted_ssim(outputs, references)

    values, indices = nearest_by_fitted_ssim(outputs, references, chunk_size=chunk_size)

    torch.testing.assert_close(values, scores.max(dim=1).values, rtol=0, atol=1e-12)
    assert indices.tolist() == scores.argmax(dim=1).tolist()


def test_nearest_recovers_inverted_and_dimmed_references():
    references = retina_images(40)
    order = torch.tensor([31, 2, 17, 8])
    outputs = torch.cat([1 - references[order[:2]], 0.2 * references[order[2:]] + 0.4])

    values, indices = nearest_by_fitted_ssim(outputs, references, chunk_size=16)

    assert indices.tolist() == order.tolist()
    assert (values > 0.9999).all()


def test_nearest_keeps_first_index_on_ties():
    references = retina_images(3).repeat(2, 1, 1, 1)  # references 3..5 repeat 0..2

    _, indices = nearest_by_fitted_ssim(1 - references[4:5], references, chunk_size=1)

    assert indices.tolist() == [1]


def test_empty_batches_give_empty_results():
    images = retina_images(3)
    empty = images[:0]

    assert ssim(empty, empty).shape == (0,)
    assert fitted_ssim(empty, empty).shape == (0,)
    assert pairwise_fitted_ssim(empty, images).shape == (0, 3)
    assert pairwise_fitted_ssim(images, empty).shape == (3, 0)
    assert nearest_by_fitted_ssim(empty, images)[1].shape == (0,)


# ---------------------------------------------------------------------------------------------
# pairwise_mse


@pytest.mark.parametrize("fitted", [False, True])
def test_pairwise_mse_matches_loop(fitted):
    outputs, references = pairwise_inputs(3, torch.float32)
    rows = []
    for output in outputs[:, None]:
        candidate = affine_fit(output.expand_as(references), references) if fitted else output
        rows.append((candidate - references).square().mean(dim=(1, 2, 3)))
    expected = torch.stack(rows)

    mse = pairwise_mse(outputs, references, fitted=fitted)

    torch.testing.assert_close(mse, expected, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_pairwise_on_cuda_matches_cpu():
    outputs, references = pairwise_inputs(3, torch.float32)
    expected = pairwise_fitted_ssim(outputs, references)

    scores = pairwise_fitted_ssim(outputs.cuda(), references.cuda())

    assert scores.device.type == "cuda"
    torch.testing.assert_close(scores.cpu(), expected, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Invalid inputs

GOOD = torch.rand(2, 3, 28, 28)

INVALID_SSIM_CALLS = [
    ("mismatched shapes", lambda: ssim(GOOD, GOOD[:1]), "same shape"),
    ("3-D input", lambda: ssim(GOOD[0], GOOD[0]), r"shape \(N, C, H, W\), got 3-D"),
    ("numpy input", lambda: ssim(GOOD.numpy(), GOOD), "must be a torch.Tensor"),
    ("integer dtype", lambda: ssim(GOOD.to(torch.uint8), GOOD.to(torch.uint8)), "floating-point"),
    ("NaN pixel", lambda: ssim(GOOD.clone().fill_(float("nan")), GOOD), "NaN or infinite"),
    ("zero data_range", lambda: ssim(GOOD, GOOD, data_range=0), "data_range must be positive"),
    ("negative data_range", lambda: ssim(GOOD, GOOD, data_range=-1.0), "data_range must be positive"),
    ("data_range None", lambda: ssim(GOOD, GOOD, data_range=None), "data_range must be a positive number"),
    ("even win_size", lambda: ssim(GOOD, GOOD, win_size=6), "odd integer"),
    ("win_size 1", lambda: ssim(GOOD, GOOD, win_size=1), "odd integer >= 3"),
    ("float win_size", lambda: ssim(GOOD, GOOD, win_size=7.0), "odd integer"),
    ("zero k2", lambda: ssim(GOOD, GOOD, k2=0.0), "k2 must be positive"),
    ("image below window", lambda: ssim(GOOD[..., :6, :], GOOD[..., :6, :]), r"smaller than the 7x7"),
    ("psnr zero data_range", lambda: psnr(GOOD, GOOD, data_range=0.0), "data_range must be positive"),
    ("psnr 3-D input", lambda: psnr(GOOD[0], GOOD[0]), "got 3-D"),
    ("affine_fit mismatched", lambda: affine_fit(GOOD, GOOD[:, :1]), "same shape"),
    ("fitted_ssim even win", lambda: fitted_ssim(GOOD, GOOD, win_size=4), "odd integer"),
    ("pairwise channels", lambda: pairwise_fitted_ssim(GOOD, GOOD[:, :1]), r"same \(C, H, W\)"),
    ("pairwise 3-D", lambda: pairwise_fitted_ssim(GOOD[0], GOOD), "got 3-D"),
    ("pairwise chunk 0", lambda: pairwise_fitted_ssim(GOOD, GOOD, chunk_size=0), "chunk_size must be"),
    ("pairwise data_range", lambda: pairwise_fitted_ssim(GOOD, GOOD, data_range=-2), "data_range"),
    ("pairwise small", lambda: pairwise_fitted_ssim(GOOD[..., :5], GOOD[..., :5]), "smaller than"),
    ("nearest no refs", lambda: nearest_by_fitted_ssim(GOOD, GOOD[:0]), "references is empty"),
    ("mse size", lambda: pairwise_mse(GOOD, GOOD[..., :20]), r"same \(C, H, W\)"),
]


@pytest.mark.parametrize(
    "call, match", [case[1:] for case in INVALID_SSIM_CALLS], ids=[case[0] for case in INVALID_SSIM_CALLS]
)
def test_invalid_inputs_raise(call, match):
    with pytest.raises(DataError, match=match):
        call()


def test_data_error_is_value_error():
    with pytest.raises(ValueError):
        ssim(GOOD, GOOD, data_range=0)
