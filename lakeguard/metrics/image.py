"""Image similarity between model reconstructions and training images: SSIM, PSNR and fitted SSIM.

SSIM is the structural similarity index of Wang, Bovik, Sheikh and Simoncelli, "Image quality
assessment: from error visibility to structural similarity", IEEE Transactions on Image Processing
13(4), 600-612, 2004. The implementation follows the defaults of scikit-image's
``skimage.metrics.structural_similarity`` (checked against scikit-image 0.26): a uniform
``win_size`` x ``win_size`` window, sample covariance and the mean over the window positions that
lie fully inside the image.

An attacker who reads training images out of a model does not need the reconstruction's absolute
grey levels: a dimmed or inverted copy gives the image away just as well. The fitted scores
therefore first map each reconstruction through the least-squares affine map ``a * x + b`` onto
the reference (:func:`affine_fit`) and score the fitted image. :func:`pairwise_fitted_ssim` does
this for every (reconstruction, reference) pair without materialising the fitted images.

All images are float tensors of shape (N, C, H, W) with values in [0, data_range]. Results are
on the device of the inputs.

NOTE: statistics are computed in float64, so tensors on Apple MPS devices, which lack float64,
are not supported.
"""

import logging
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

from lakeguard.errors import DataError

_logger = logging.getLogger(__name__)

__all__ = [
    "affine_fit",
    "fitted_ssim",
    "nearest_by_fitted_ssim",
    "pairwise_fitted_ssim",
    "pairwise_mse",
    "psnr",
    "ssim",
]

# Upper bound on the bytes of one block's local-statistics tensors in the pairwise kernel. Four
# tensors of shape (L, outputs in block, references in block) are alive at once.
_MAX_BLOCK_BYTES = 256 * 2**20
# Bytes of one group of unfolded references, (L, win_size**2, references in group). Building a
# group takes twice this for a moment.
_MAX_UNFOLD_BYTES = 64 * 2**20
# Pairs per block when chunk_size is None. On 2 AMD EPYC cores (torch 2.13, 28x28 images), blocks
# of 1,024 to 4,096 pairs ran equally fast. Blocks of 8,192 RGB pairs ran about 1.8x slower,
# probably because their (L, p, r) tensors no longer fit the CPU caches.
_DEFAULT_CHUNK_PAIRS = 2048
# References per block. 32 and 64 measured the same, and 128 was slower.
_MAX_BLOCK_REFERENCES = 64


# ---------------------------------------------------------------------------------------------
# Input checks


def _check_images(images: torch.Tensor, name: str) -> None:
    """Raise DataError unless ``images`` is a finite floating-point tensor of shape (N, C, H, W)."""
    if not isinstance(images, torch.Tensor):
        raise DataError(
            f"{name} must be a torch.Tensor of shape (N, C, H, W), got {type(images).__name__}; "
            "convert it with torch.as_tensor"
        )
    if images.dim() != 4:
        raise DataError(
            f"{name} must have shape (N, C, H, W), got {images.dim()}-D shape {tuple(images.shape)}; "
            "add the missing batch or channel axis with unsqueeze"
        )
    if not images.is_floating_point():
        raise DataError(
            f"{name} must be a floating-point tensor with values in [0, data_range], got dtype "
            f"{images.dtype}; convert 8-bit images with images.float() / 255"
        )
    if not bool(torch.isfinite(images).all()):
        raise DataError(f"{name} contains NaN or infinite values; remove or repair those images")


def _check_same_device(x: torch.Tensor, y: torch.Tensor, name_x: str, name_y: str) -> None:
    if x.device != y.device:
        raise DataError(
            f"{name_x} is on {x.device} but {name_y} is on {y.device}; move both to one device"
        )


def _check_same_shape(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise DataError(
            f"x and y must have the same shape, got {tuple(x.shape)} and {tuple(y.shape)}; "
            "pass one y image per x image, of the same size and channel count"
        )


def _check_same_image_size(outputs: torch.Tensor, references: torch.Tensor) -> None:
    if outputs.shape[1:] != references.shape[1:]:
        raise DataError(
            f"outputs and references must have the same (C, H, W), got {tuple(outputs.shape[1:])} "
            f"and {tuple(references.shape[1:])}; resize or convert the outputs to the reference format"
        )


def _check_data_range(data_range: float) -> None:
    if isinstance(data_range, bool) or not isinstance(data_range, (int, float)):
        raise DataError(
            f"data_range must be a positive number, got {data_range!r}; pass data_range=1.0 for "
            "images in [0, 1]"
        )
    if not (math.isfinite(data_range) and data_range > 0):
        raise DataError(
            f"data_range must be positive and finite, got {data_range}; pass data_range=1.0 for "
            "images in [0, 1]"
        )


def _check_ssim_parameters(win_size: int, k1: float, k2: float) -> None:
    if isinstance(win_size, bool) or not isinstance(win_size, int):
        raise DataError(f"win_size must be an odd integer >= 3, got {win_size!r}; use win_size=7")
    if win_size < 3 or win_size % 2 == 0:
        raise DataError(f"win_size must be an odd integer >= 3, got {win_size}; use win_size=7")
    for name, value in (("k1", k1), ("k2", k2)):
        # A zero constant lets the SSIM denominator reach 0 on flat image regions.
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DataError(f"{name} must be a positive number, got {value!r}; use k1=0.01, k2=0.03")
        if not (math.isfinite(value) and value > 0):
            raise DataError(f"{name} must be positive and finite, got {value}; use k1=0.01, k2=0.03")


def _check_window_fits(images: torch.Tensor, name: str, win_size: int) -> None:
    height, width = images.shape[-2:]
    if height < win_size or width < win_size:
        raise DataError(
            f"{name} images of size {height}x{width} are smaller than the {win_size}x{win_size} "
            f"SSIM window; pass an odd win_size <= {min(height, width)} or use larger images"
        )


def _check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is None:
        return
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise DataError(
            f"chunk_size must be a positive integer or None, got {chunk_size!r}; pass None to "
            "size blocks automatically"
        )


def _result_dtype(x: torch.Tensor, y: torch.Tensor) -> torch.dtype:
    """Return float64 if either input is float64, else float32 (half precision is widened)."""
    dtype = torch.promote_types(x.dtype, y.dtype)
    return torch.float64 if dtype == torch.float64 else torch.float32


# ---------------------------------------------------------------------------------------------
# SSIM of image pairs


def _box_mean(images: torch.Tensor, win_size: int) -> torch.Tensor:
    """Mean over each win_size x win_size window that lies inside the image.

    A 'valid' uniform filter equals scikit-image's ``uniform_filter`` followed by its crop of
    (win_size - 1) // 2 pixels per border, because the positions left after the crop are exactly
    those whose window never reaches the reflected padding.

    Args:
        images: (N, C, H, W) tensor.
        win_size: Odd window side in pixels.

    Returns:
        (N, C, H - win_size + 1, W - win_size + 1) tensor.
    """
    return F.avg_pool2d(images, kernel_size=win_size, stride=1)


def _ssim_compute(
    x: torch.Tensor, y: torch.Tensor, data_range: float, win_size: int, k1: float, k2: float
) -> torch.Tensor:
    """Mean SSIM per image pair, with the statistics in the dtype of the inputs.

    Args:
        x: (N, C, H, W) tensor.
        y: (N, C, H, W) tensor of the same shape and dtype.
        data_range: Value range of the images, which scales the stabilising constants.
        win_size: Odd window side in pixels.
        k1: Luminance constant, c1 = (k1 * data_range) ** 2.
        k2: Contrast constant, c2 = (k2 * data_range) ** 2.

    Returns:
        (N,) tensor: SSIM averaged over valid window positions and channels.
    """
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    # Sample covariance over the NP = win_size**2 pixels of a window, as scikit-image's default.
    num_pixels = win_size * win_size
    cov_norm = num_pixels / (num_pixels - 1)

    # One pooling call for the five local moments: E[x], E[y], E[x^2], E[y^2], E[xy].
    n = x.shape[0]
    moments = _box_mean(torch.cat([x, y, x * x, y * y, x * y]), win_size)
    mu_x, mu_y, mean_xx, mean_yy, mean_xy = moments.split(n)
    var_x = cov_norm * (mean_xx - mu_x * mu_x)
    var_y = cov_norm * (mean_yy - mu_y * mu_y)
    cov_xy = cov_norm * (mean_xy - mu_x * mu_y)

    # SSIM = (2 mu_x mu_y + c1)(2 cov_xy + c2) / ((mu_x^2 + mu_y^2 + c1)(var_x + var_y + c2)).
    numerator = (2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)
    denominator = (mu_x * mu_x + mu_y * mu_y + c1) * (var_x + var_y + c2)
    ssim_map = numerator / denominator

    # Every channel has the same number of valid positions, so the mean over (C, h, w) equals
    # scikit-image's mean of the per-channel means.
    return ssim_map.mean(dim=(1, 2, 3))


def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Compute the mean SSIM of each image pair.

    Matches ``skimage.metrics.structural_similarity(a, b, data_range=data_range,
    channel_axis=0, win_size=win_size, K1=k1, K2=k2)`` per pair: uniform window, sample covariance
    (NP / (NP - 1) with NP = win_size**2), mean over the window positions fully inside the image,
    then over channels. The statistics are computed in float64 because local variances
    E[x^2] - E[x]^2 lose digits to cancellation in float32, and the result is cast back.

    Args:
        x: (N, C, H, W) float tensor, values in [0, data_range], H and W >= win_size.
        y: Tensor of the same shape, on the same device.
        data_range: Width of the value range, 1.0 for images in [0, 1]. It is never estimated
            from the data.
        win_size: Odd side of the square window in pixels, at least 3.
        k1: Luminance constant, c1 = (k1 * data_range) ** 2, positive.
        k2: Contrast constant, c2 = (k2 * data_range) ** 2, positive.

    Returns:
        (N,) tensor in [-1, 1], float64 if an input is float64 and float32 otherwise. 1 means
        identical images.

    Raises:
        DataError: If an input is not a finite floating-point (N, C, H, W) tensor, the shapes or
            devices differ, the images are smaller than the window, or a parameter is invalid.

    Example:
        >>> images = torch.rand(2, 1, 28, 28)
        >>> ssim(images, images, data_range=1.0)
        tensor([1., 1.])
    """
    _check_images(x, "x")
    _check_images(y, "y")
    _check_same_shape(x, y)
    _check_same_device(x, y, "x", "y")
    _check_data_range(data_range)
    _check_ssim_parameters(win_size, k1, k2)
    _check_window_fits(x, "x", win_size)

    result_dtype = _result_dtype(x, y)
    if x.shape[0] == 0:
        return torch.empty(0, dtype=result_dtype, device=x.device)
    scores = _ssim_compute(x.double(), y.double(), data_range, win_size, k1, k2)
    return scores.to(result_dtype)


def psnr(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0) -> torch.Tensor:
    """Compute the peak signal-to-noise ratio of each image pair in decibels.

    PSNR = 10 * log10(data_range**2 / MSE), with the MSE over all pixels and channels of a pair,
    as ``skimage.metrics.peak_signal_noise_ratio(a, b, data_range=data_range)``. Identical images
    have MSE 0 and get +inf.

    Args:
        x: (N, C, H, W) float tensor, values in [0, data_range].
        y: Tensor of the same shape, on the same device.
        data_range: Width of the value range, 1.0 for images in [0, 1].

    Returns:
        (N,) tensor in dB, +inf where a pair is identical; float64 if an input is float64 and
        float32 otherwise.

    Raises:
        DataError: If an input is not a finite floating-point (N, C, H, W) tensor, the shapes or
            devices differ, or data_range is not positive.
    """
    _check_images(x, "x")
    _check_images(y, "y")
    _check_same_shape(x, y)
    _check_same_device(x, y, "x", "y")
    _check_data_range(data_range)

    mse = (x.double() - y.double()).square().mean(dim=(1, 2, 3))
    # data_range**2 / 0 is +inf in IEEE arithmetic, and log10(+inf) = +inf.
    scores = 10 * torch.log10(data_range**2 / mse)
    return scores.to(_result_dtype(x, y))


# ---------------------------------------------------------------------------------------------
# Affine read-out


def _affine_coefficients(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Least-squares a, b per image pair, minimising ||a * x + b - y||^2 over all pixels.

    The closed form is a = <x - mean(x), y - mean(y)> / ||x - mean(x)||^2 and
    b = mean(y) - a * mean(x). A constant x carries no structure to fit, so it gets a = 0 and
    b = mean(y). Constancy is tested exactly (max == min): the centred norm of a constant image
    can be a rounding residue instead of 0, which would give a huge, meaningless a.

    Args:
        x: (N, C, H, W) float64 tensor.
        y: (N, C, H, W) float64 tensor.

    Returns:
        a and b, each of shape (N,), float64.
    """
    flat_x = x.flatten(1)
    flat_y = y.flatten(1)
    mean_x = flat_x.mean(dim=1)
    mean_y = flat_y.mean(dim=1)
    centred_x = flat_x - mean_x[:, None]
    centred_y = flat_y - mean_y[:, None]

    is_constant = flat_x.amax(dim=1) == flat_x.amin(dim=1)
    norm_x = (centred_x * centred_x).sum(dim=1)
    safe_norm_x = torch.where(is_constant, torch.ones_like(norm_x), norm_x)
    slope = (centred_x * centred_y).sum(dim=1) / safe_norm_x
    slope = torch.where(is_constant, torch.zeros_like(slope), slope)
    intercept = mean_y - slope * mean_x
    return slope, intercept


def affine_fit(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Map each x image onto its y image with the least-squares affine map a * x + b.

    a and b are scalars per image pair, fitted over all pixels and channels. This is the
    read-out an attacker applies to a dimmed, contrast-reduced or inverted reconstruction: the
    inverted copy 1 - y fits back to y exactly (a = -1, b = 1). A constant x gets a = 0 and
    b = mean(y).

    The result is not clipped to [0, data_range]. Clipping would break the closed form that
    :func:`pairwise_fitted_ssim` relies on, and scores are computed on this fitted map.

    Args:
        x: (N, C, H, W) float tensor, the reconstructions. Any finite range.
        y: Tensor of the same shape, on the same device: the references.

    Returns:
        (N, C, H, W) tensor a * x + b, float64 if an input is float64 and float32 otherwise.

    Raises:
        DataError: If an input is not a finite floating-point (N, C, H, W) tensor, or the shapes
            or devices differ.
    """
    _check_images(x, "x")
    _check_images(y, "y")
    _check_same_shape(x, y)
    _check_same_device(x, y, "x", "y")

    x64 = x.double()
    slope, intercept = _affine_coefficients(x64, y.double())
    fitted = slope[:, None, None, None] * x64 + intercept[:, None, None, None]
    return fitted.to(_result_dtype(x, y))


def fitted_ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
) -> torch.Tensor:
    """Compute the SSIM between the affine fit of each x image and its y image.

    Equals ``ssim(affine_fit(x, y), y)``, with the fitted image kept in float64 between the two
    steps.

    Args:
        x: (N, C, H, W) float tensor, the reconstructions. Any finite range.
        y: Tensor of the same shape, on the same device: the references, values in
            [0, data_range].
        data_range: Width of the value range of y, 1.0 for images in [0, 1].
        win_size: Odd side of the square window in pixels, at least 3.
        k1: Luminance constant, c1 = (k1 * data_range) ** 2, positive.
        k2: Contrast constant, c2 = (k2 * data_range) ** 2, positive.

    Returns:
        (N,) tensor in [-1, 1]; float64 if an input is float64 and float32 otherwise.

    Raises:
        DataError: As :func:`ssim`.
    """
    _check_images(x, "x")
    _check_images(y, "y")
    _check_same_shape(x, y)
    _check_same_device(x, y, "x", "y")
    _check_data_range(data_range)
    _check_ssim_parameters(win_size, k1, k2)
    _check_window_fits(x, "x", win_size)

    if x.shape[0] == 0:
        return torch.empty(0, dtype=_result_dtype(x, y), device=x.device)
    x64 = x.double()
    y64 = y.double()
    slope, intercept = _affine_coefficients(x64, y64)
    fitted = slope[:, None, None, None] * x64 + intercept[:, None, None, None]
    scores = _ssim_compute(fitted, y64, data_range, win_size, k1, k2)
    return scores.to(_result_dtype(x, y))


# ---------------------------------------------------------------------------------------------
# Pairwise fitted SSIM
#
# For a pair (x, y) and its global fit x' = a * x + b, the local statistics of x' follow from
# those of x at every window position:
#     mu_x' = a * mu_x + b,    var_x' = a^2 * var_x,    cov_x'y = a * cov_xy.
# All of them but cov_xy are per-image quantities. The local covariance of a pair is
#     cov_xy = cov_norm / NP * sum over the window of (x - mu_x)(y - mu_y),
# so with every window unfolded into a row of NP = win_size**2 pixels and centred on its own
# mean, cov_xy of all pairs in a block is one batched matmul over the L window positions. That
# ran about 10x faster than avg_pool2d over the pixel products of every pair.
#
# Each window is centred before the matmul, instead of subtracting mu_x * mu_y afterwards, to
# avoid cancellation. In flat regions such as the black background of fundus images, E[xy] and
# mu_x * mu_y are large and nearly equal, while the SSIM denominator there is only about c2.
# Subtracting afterwards made float32 scores of dimmed RetinaMNIST images drift by 3.5e-6, and
# centred windows by 1.5e-7.
#
# The remaining element-wise steps run eagerly on blocks small enough for the CPU caches.
# torch.compile fused them and saved about 1 of 6 microseconds per pair, but compiling took 10-20 s
# per process and needs a C++ compiler at run time, so the kernel does not use it. All timings:
# 2 AMD EPYC cores, torch 2.13 CPU, 28x28 images.


class _ImageStatistics:
    """Per-image quantities of a set of images that the pairwise kernel reuses for every pair.

    Attributes:
        mean: (N,) float64 global mean over pixels and channels.
        centred: (N, C, H, W) float64 images minus their global mean.
        norm: (N,) float64 squared norm of the centred image.
        is_constant: (N,) bool, True where all pixels of an image are equal.
        local_mean: (L, N) local means of the centred images in the compute dtype, with
            L = C * h * w valid window positions.
        local_var: (L, N) sample variance in each window, in the compute dtype.
    """

    def __init__(self, images: torch.Tensor, compute_dtype: torch.dtype, win_size: int) -> None:
        num_pixels = win_size * win_size
        cov_norm = num_pixels / (num_pixels - 1)
        images64 = images.double()
        flat = images64.flatten(1)
        self.mean = flat.mean(dim=1)
        self.centred = images64 - self.mean[:, None, None, None]
        self.norm = self.centred.flatten(1).square().sum(dim=1)
        self.is_constant = flat.amax(dim=1) == flat.amin(dim=1)
        self._centred_compute = self.centred.to(compute_dtype)

        local_mean = _box_mean(self.centred, win_size)
        local_var = cov_norm * (_box_mean(self.centred.square(), win_size) - local_mean.square())
        # (N, C, h, w) -> (L, N): window positions first, as in the batched matmul.
        self.local_mean = local_mean.flatten(1).t().contiguous().to(compute_dtype)
        self.local_var = local_var.flatten(1).t().contiguous().to(compute_dtype)

    def centred_windows(self, index: slice, win_size: int) -> torch.Tensor:
        """Unfold the windows of images[index], each centred on its own mean.

        The subtraction runs in the compute dtype. Its rounding error is one shared offset per
        window, which drops out of the covariance up to second order because the centred
        pixels of a window sum to about 0.

        Returns:
            (L, n, win_size**2) contiguous tensor, window positions in the order of
            ``_box_mean(images).flatten(1)``.
        """
        images = self._centred_compute[index]
        n = images.shape[0]
        windows = images.unfold(2, win_size, 1).unfold(3, win_size, 1)  # (n, C, h, w, k, k)
        windows = windows.reshape(n, -1, win_size * win_size).transpose(0, 1)  # (L, n, NP)
        # The broadcast subtraction writes a new contiguous tensor.
        return windows - self.local_mean[:, index, None]


def _fit_slopes(
    outputs: _ImageStatistics, out_index: slice, references: _ImageStatistics, ref_index: slice
) -> torch.Tensor:
    """Least-squares slope a of every (output, reference) pair, as in :func:`affine_fit`.

    a = <x - mean(x), y - mean(y)> / ||x - mean(x)||^2 for all pairs of the two index ranges is
    one float64 matmul of the centred images; constant outputs get a = 0.

    Returns:
        (outputs in out_index, references in ref_index) float64 tensor.
    """
    inner = outputs.centred[out_index].flatten(1) @ references.centred[ref_index].flatten(1).t()
    norm = outputs.norm[out_index]
    is_constant = outputs.is_constant[out_index]
    safe_norm = torch.where(is_constant, torch.ones_like(norm), norm)
    slopes = inner / safe_norm[:, None]
    return slopes.masked_fill(is_constant[:, None], 0.0)


def _block_shape(num_outputs: int, num_references: int, num_positions: int, itemsize: int,
                 chunk_size: int | None) -> tuple[int, int]:
    """Choose (outputs, references) per block from the pair budget and the memory cap."""
    pairs = _DEFAULT_CHUNK_PAIRS if chunk_size is None else chunk_size
    max_pairs = max(1, _MAX_BLOCK_BYTES // (4 * num_positions * itemsize))
    pairs = min(pairs, max_pairs)
    block_references = min(num_references, _MAX_BLOCK_REFERENCES, pairs)
    block_outputs = min(num_outputs, max(1, pairs // block_references))
    return block_outputs, block_references


def _iter_fitted_ssim_blocks(
    outputs: torch.Tensor,
    references: torch.Tensor,
    *,
    data_range: float,
    win_size: int,
    k1: float,
    k2: float,
    chunk_size: int | None,
) -> Iterator[tuple[slice, slice, torch.Tensor]]:
    """Yield fitted SSIM block by block, in increasing reference order for each output.

    Inputs must already be validated.

    Yields:
        (output slice, reference slice, (block outputs, block references) tensor of scores in
        the compute dtype).
    """
    if outputs.shape[0] == 0 or references.shape[0] == 0:
        return
    compute_dtype = _result_dtype(outputs, references)
    c1 = (k1 * data_range) ** 2
    c2 = (k2 * data_range) ** 2
    num_pixels = win_size * win_size
    cov_norm = num_pixels / (num_pixels - 1)

    # Per-image statistics; the global fits are computed per block of outputs below.
    out_stats = _ImageStatistics(outputs, compute_dtype, win_size)
    ref_stats = _ImageStatistics(references, compute_dtype, win_size)

    # Reference-side terms, (L, R). The fitted local mean is mu_x' = a * mu_xc + mean(y) for the
    # centred local mean mu_xc, because b = mean(y) - a * mean(x).
    ref_mean = ref_stats.mean.to(compute_dtype)  # (R,)
    ref_local_mean = ref_stats.local_mean + ref_mean  # uncentred mu_y
    twice_ref_local_mean = 2 * ref_local_mean
    ref_luminance_term = ref_local_mean.square() + c1  # mu_y^2 + c1
    ref_contrast_term = ref_stats.local_var + c2  # var_y + c2

    num_positions = out_stats.local_mean.shape[0]
    itemsize = torch.empty((), dtype=compute_dtype).element_size()
    block_outputs, block_references = _block_shape(
        outputs.shape[0], references.shape[0], num_positions, itemsize, chunk_size
    )
    group_size = max(
        block_references,
        _MAX_UNFOLD_BYTES // (num_positions * num_pixels * itemsize) // block_references * block_references,
    )
    _logger.debug(
        "fitted SSIM of %d x %d pairs: blocks of %d x %d pairs, %d window positions, %s",
        outputs.shape[0], references.shape[0], block_outputs, block_references, num_positions,
        compute_dtype,
    )
    c1_tensor = torch.tensor(c1, dtype=compute_dtype, device=outputs.device)
    c2_tensor = torch.tensor(c2, dtype=compute_dtype, device=outputs.device)

    for group_start in range(0, references.shape[0], group_size):
        group_stop = min(group_start + group_size, references.shape[0])
        # (L, NP, references in group), contiguous: bmm ran about 20% slower on the transposed view.
        ref_windows = ref_stats.centred_windows(slice(group_start, group_stop), win_size)
        ref_windows = ref_windows.transpose(1, 2).contiguous()

        for out_start in range(0, outputs.shape[0], block_outputs):
            out_block = slice(out_start, min(out_start + block_outputs, outputs.shape[0]))
            # Scaled so that the matmul returns 2 * cov_norm / NP * sum = 2 * cov_xy directly.
            out_windows = out_stats.centred_windows(out_block, win_size)
            out_windows.mul_(2 * cov_norm / num_pixels)
            out_local_mean = out_stats.local_mean[:, out_block, None]  # (L, p, 1)
            out_local_var = out_stats.local_var[:, out_block, None]
            group_slopes = _fit_slopes(out_stats, out_block, ref_stats, slice(group_start, group_stop))
            group_slopes = group_slopes.to(compute_dtype)  # (p, references in group)

            for ref_start in range(group_start, group_stop, block_references):
                ref_block = slice(ref_start, min(ref_start + block_references, group_stop))
                columns = slice(ref_block.start - group_start, ref_block.stop - group_start)
                slope = group_slopes[:, columns]  # (p, r)

                # A2 = 2 cov_x'y + c2 = a * (2 cov_xy) + c2, shape (L, p, r).
                contrast_num = torch.bmm(out_windows, ref_windows[:, :, columns])
                torch.addcmul(c2_tensor, contrast_num, slope, out=contrast_num)

                # A1 = 2 mu_x' mu_y + c1 and B1 = mu_x'^2 + mu_y^2 + c1.
                fitted_mean = torch.addcmul(ref_mean[ref_block], slope, out_local_mean)
                luminance_num = torch.addcmul(
                    c1_tensor, fitted_mean, twice_ref_local_mean[:, None, ref_block]
                )
                luminance_den = torch.addcmul(
                    ref_luminance_term[:, None, ref_block], fitted_mean, fitted_mean, out=fitted_mean
                )

                # B2 = var_x' + var_y + c2 = a^2 var_x + var_y + c2.
                contrast_den = torch.addcmul(
                    ref_contrast_term[:, None, ref_block], slope * slope, out_local_var
                )

                ssim_map = luminance_num.mul_(contrast_num).div_(luminance_den.mul_(contrast_den))
                yield out_block, ref_block, ssim_map.mean(dim=0)


def _check_pairwise_inputs(
    outputs: torch.Tensor,
    references: torch.Tensor,
    data_range: float,
    win_size: int,
    k1: float,
    k2: float,
    chunk_size: int | None,
) -> None:
    _check_images(outputs, "outputs")
    _check_images(references, "references")
    _check_same_image_size(outputs, references)
    _check_same_device(outputs, references, "outputs", "references")
    _check_data_range(data_range)
    _check_ssim_parameters(win_size, k1, k2)
    _check_window_fits(references, "references", win_size)
    _check_chunk_size(chunk_size)


@torch.no_grad()
def pairwise_fitted_ssim(
    outputs: torch.Tensor,
    references: torch.Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
    chunk_size: int | None = None,
) -> torch.Tensor:
    """Compute the fitted SSIM of every (output, reference) pair.

    Entry [p, r] is ``fitted_ssim(outputs[p:p+1], references[r:r+1])``: the SSIM between the
    least-squares affine map of output p onto reference r and reference r. The fitted images are
    never built. The per-image local statistics are computed once, and the global fits take one
    float64 matmul per group of pairs. Each block of pairs then needs one batched matmul for its
    local covariances and a fixed number of element-wise passes, as the comment above
    ``_ImageStatistics`` derives.

    float32 inputs are scored in float32, after the per-image statistics and the fits are
    computed in float64; the results agree with :func:`fitted_ssim` to within 1e-5.

    Args:
        outputs: (P, C, H, W) float tensor, the reconstructions. Any finite range.
        references: (R, C, H, W) float tensor on the same device, values in [0, data_range].
        data_range: Width of the value range of the references, 1.0 for images in [0, 1].
        win_size: Odd side of the square window in pixels, at least 3.
        k1: Luminance constant, c1 = (k1 * data_range) ** 2, positive.
        k2: Contrast constant, c2 = (k2 * data_range) ** 2, positive.
        chunk_size: Maximum number of pairs scored per block; None picks 2048. Blocks are also
            capped so that their four (C * h * w, outputs, references) intermediates stay under
            256 MB. The result does not depend on it.

    Returns:
        (P, R) tensor; float64 if an input is float64 and float32 otherwise.

    Raises:
        DataError: If an input is not a finite floating-point 4-D tensor, the (C, H, W) or devices
            differ, the images are smaller than the window, or a parameter is invalid.
    """
    _check_pairwise_inputs(outputs, references, data_range, win_size, k1, k2, chunk_size)

    scores = torch.empty(
        outputs.shape[0], references.shape[0], dtype=_result_dtype(outputs, references),
        device=outputs.device,
    )
    for out_block, ref_block, block_scores in _iter_fitted_ssim_blocks(
        outputs, references, data_range=data_range, win_size=win_size, k1=k1, k2=k2,
        chunk_size=chunk_size,
    ):
        scores[out_block, ref_block] = block_scores
    return scores


@torch.no_grad()
def nearest_by_fitted_ssim(
    outputs: torch.Tensor,
    references: torch.Tensor,
    *,
    data_range: float = 1.0,
    win_size: int = 7,
    k1: float = 0.01,
    k2: float = 0.03,
    chunk_size: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Find the reference with the highest fitted SSIM for every output.

    Reduces :func:`pairwise_fitted_ssim` block by block, so the (P, R) matrix is never held.
    Ties go to the lowest reference index.

    Args:
        outputs: (P, C, H, W) float tensor, the reconstructions. Any finite range.
        references: (R, C, H, W) float tensor on the same device, values in [0, data_range].
            R must be at least 1.
        data_range: Width of the value range of the references, 1.0 for images in [0, 1].
        win_size: Odd side of the square window in pixels, at least 3.
        k1: Luminance constant, c1 = (k1 * data_range) ** 2, positive.
        k2: Contrast constant, c2 = (k2 * data_range) ** 2, positive.
        chunk_size: Maximum number of pairs scored per block, as in :func:`pairwise_fitted_ssim`.

    Returns:
        values: (P,) best fitted SSIM per output, dtype as :func:`pairwise_fitted_ssim`.
        indices: (P,) int64 index into references of that best match.

    Raises:
        DataError: As :func:`pairwise_fitted_ssim`, or if references is empty.
    """
    _check_pairwise_inputs(outputs, references, data_range, win_size, k1, k2, chunk_size)
    if references.shape[0] == 0:
        raise DataError("references is empty; pass at least one reference image")

    values = torch.full(
        (outputs.shape[0],), -math.inf, dtype=_result_dtype(outputs, references),
        device=outputs.device,
    )
    indices = torch.zeros(outputs.shape[0], dtype=torch.int64, device=outputs.device)
    for out_block, ref_block, block_scores in _iter_fitted_ssim_blocks(
        outputs, references, data_range=data_range, win_size=win_size, k1=k1, k2=k2,
        chunk_size=chunk_size,
    ):
        block_values, block_indices = block_scores.max(dim=1)
        # Blocks of one output arrive in increasing reference order, so a strict comparison keeps
        # the lowest index among ties.
        improved = block_values > values[out_block]
        values[out_block] = torch.where(improved, block_values, values[out_block])
        indices[out_block] = torch.where(improved, block_indices + ref_block.start, indices[out_block])
    return values, indices


# ---------------------------------------------------------------------------------------------
# Pairwise MSE


@torch.no_grad()
def pairwise_mse(
    outputs: torch.Tensor, references: torch.Tensor, *, fitted: bool = False
) -> torch.Tensor:
    """Compute the mean squared error of every (output, reference) pair.

    Uses ||x - y||^2 = ||x_c||^2 + ||y_c||^2 - 2 <x_c, y_c> + n (mean(x) - mean(y))^2, where
    x_c and y_c are the images centred on their global means and n is the number of values per
    image. The inner products of all pairs take one float64 matmul. With ``fitted=True`` the
    output is first mapped onto the reference by :func:`affine_fit`, whose residual is
    ||y_c||^2 - <x_c, y_c>^2 / ||x_c||^2 (||y_c||^2 for a constant x).

    Args:
        outputs: (P, C, H, W) float tensor.
        references: (R, C, H, W) float tensor on the same device.
        fitted: Score the affine fit of each output instead of the output itself.

    Returns:
        (P, R) tensor of MSE >= 0; float64 if an input is float64 and float32 otherwise.

    Raises:
        DataError: If an input is not a finite floating-point 4-D tensor, or the (C, H, W) or
            devices differ.
    """
    _check_images(outputs, "outputs")
    _check_images(references, "references")
    _check_same_image_size(outputs, references)
    _check_same_device(outputs, references, "outputs", "references")

    out_flat = outputs.double().flatten(1)
    ref_flat = references.double().flatten(1)
    num_values = out_flat.shape[1]
    out_mean = out_flat.mean(dim=1)
    ref_mean = ref_flat.mean(dim=1)
    out_centred = out_flat - out_mean[:, None]
    ref_centred = ref_flat - ref_mean[:, None]
    inner = out_centred @ ref_centred.t()  # (P, R)
    out_norm = out_centred.square().sum(dim=1)
    ref_norm = ref_centred.square().sum(dim=1)

    if fitted:
        is_constant = out_flat.amax(dim=1) == out_flat.amin(dim=1)
        safe_norm = torch.where(is_constant, torch.ones_like(out_norm), out_norm)
        explained = (inner * inner / safe_norm[:, None]).masked_fill(is_constant[:, None], 0.0)
        squared_error = ref_norm[None, :] - explained
    else:
        # x_c - y_c is orthogonal to the constant offset mean(x) - mean(y), so their squared norms add.
        mean_gap = out_mean[:, None] - ref_mean[None, :]
        squared_error = out_norm[:, None] + ref_norm[None, :] - 2 * inner
        squared_error += num_values * mean_gap * mean_gap
    mse = squared_error.clamp_min_(0.0) / num_values
    return mse.to(_result_dtype(outputs, references))
