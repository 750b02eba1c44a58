"""Load MedMNIST 2D splits from a local root, validated against ``medmnist.INFO``.

Files follow medmnist's own layout, ``<root>/<flag>.npz`` with the keys ``train_images``,
``train_labels``, ``val_images``, ``val_labels``, ``test_images`` and ``test_labels``. Every check
runs before a single image reaches a model, and every failure names the file and the fix.

Source: MedMNIST v2, Yang et al., Scientific Data 10, 41 (2023); ``medmnist`` 3.0.2 for the metadata.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.request
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from lakeguard.errors import DataError
from lakeguard.tasks import Task

_logger = logging.getLogger(__name__)

# Official RetinaMNIST, BreastMNIST and PneumoniaMNIST files ship here (CC BY 4.0, see README.md).
DEFAULT_ROOT = Path(__file__).resolve().parent / "default"

SPLITS = ("train", "val", "test")
IMAGE_SIZE = 28  # MedMNIST's native size; larger MedMNIST+ sizes are not supported


@dataclass(frozen=True)
class DatasetInfo:
    """Metadata of one MedMNIST 2D flag, read from ``medmnist.INFO``.

    Attributes:
        flag: lower-case dataset name, such as ``"retinamnist"``.
        task: label structure, which fixes the loss and the metrics.
        n_channels: 1 (grey) or 3 (RGB).
        num_outputs: logits of a classifier: classes, or labels for multi-label tasks.
        label_names: class or label names by index.
        n_samples: expected number of images per split.
        url: download address of the 28×28 file.
        md5: MD5 of the official 28×28 file.
    """

    flag: str
    task: Task
    n_channels: int
    num_outputs: int
    label_names: tuple[str, ...]
    n_samples: dict[str, int]
    url: str
    md5: str


@dataclass
class Split:
    """Images and labels of one split.

    Attributes:
        images: uint8 array, (N, H, W) for grey or (N, H, W, 3) for RGB images.
        labels: integer array, (N, 1) of class ids, or (N, L) of 0/1 for multi-label tasks.
        name: ``"train"``, ``"val"`` or ``"test"``.
    """

    images: np.ndarray
    labels: np.ndarray
    name: str

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Return float images (N, C, H, W) in [0, 1] and int64 labels (N, 1) or (N, L)."""
        images = torch.from_numpy(np.ascontiguousarray(self.images)).float().div_(255.0)
        if images.ndim == 3:
            images = images.unsqueeze(1)
        else:
            images = images.permute(0, 3, 1, 2).contiguous()
        return images, torch.from_numpy(self.labels.astype(np.int64))

    def subset(self, indices: np.ndarray) -> Split:
        """Return the images and labels at ``indices`` as a new split of the same name."""
        return Split(self.images[indices], self.labels[indices], self.name)


@dataclass
class MedMNISTData:
    """The three splits of one flag with its metadata."""

    info: DatasetInfo
    train: Split
    val: Split
    test: Split
    path: Path


def dataset_info(flag: str) -> DatasetInfo:
    """Return the metadata of a MedMNIST 2D flag.

    Raises:
        DataError: the flag is unknown to medmnist, or is a 3D dataset.
    """
    import medmnist  # imported here: it costs about a second and reads nothing at import time

    key = str(flag).lower()
    if key not in medmnist.INFO:
        known = sorted(k for k in medmnist.INFO if not k.endswith("3d"))
        raise DataError(
            f"unknown MedMNIST flag {flag!r}; use one of the 2D flags: {', '.join(known)}"
        )
    if key.endswith("3d"):
        raise DataError(f"MedMNIST flag {flag!r} is a 3D dataset; lakeguard supports 2D flags only")
    entry = medmnist.INFO[key]
    task = Task(entry["task"])
    labels = tuple(entry["label"][str(i)] for i in range(len(entry["label"])))
    return DatasetInfo(
        flag=key,
        task=task,
        n_channels=int(entry["n_channels"]),
        num_outputs=len(labels),
        label_names=labels,
        n_samples={split: int(entry["n_samples"][split]) for split in SPLITS},
        url=entry["url"],
        md5=entry["MD5"],
    )


def resolve_root(root: str | os.PathLike | None) -> Path:
    """Return ``root`` as a path, or the folder of bundled default data when it is None or empty."""
    if root is None or str(root) == "":
        return DEFAULT_ROOT
    return Path(root).expanduser()


def load_split(
    flag: str, split: str, *, root: str | os.PathLike | None = None, check_size: bool = True
) -> Split:
    """Load one split of ``<root>/<flag>.npz`` and validate it.

    Args:
        flag: MedMNIST 2D flag, such as ``"retinamnist"``.
        split: ``"train"``, ``"val"`` or ``"test"``.
        root: folder holding ``<flag>.npz``; None means the bundled default data.
        check_size: compare the number of images with the official split size.

    Raises:
        DataError: unknown flag or split, missing or corrupt file, wrong shapes, dtypes, label
            values, or split size.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; use one of {', '.join(SPLITS)}")
    info = dataset_info(flag)
    path = _npz_path(info, resolve_root(root))
    with _open_npz(path) as archive:
        images = _read_array(archive, f"{split}_images", path)
        labels = _read_array(archive, f"{split}_labels", path)
    _validate_split(info, split, images, labels, path, check_size=check_size)
    return Split(images=images, labels=labels, name=split)


def load_dataset(
    flag: str, *, root: str | os.PathLike | None = None, check_size: bool = True
) -> MedMNISTData:
    """Load and validate all three splits of a flag; see :func:`load_split`."""
    info = dataset_info(flag)
    path = _npz_path(info, resolve_root(root))
    splits = {s: load_split(flag, s, root=root, check_size=check_size) for s in SPLITS}
    _logger.info(
        "loaded %s from %s: %s",
        info.flag,
        path,
        ", ".join(f"{s} {len(splits[s])}" for s in SPLITS),
    )
    return MedMNISTData(info=info, path=path, **splits)


def download_flag(flag: str, root: str | os.PathLike, *, url: str | None = None) -> Path:
    """Download ``<flag>.npz`` into ``root`` and verify its MD5 against ``medmnist.INFO``.

    medmnist's own ``download()`` needs torchvision, which lakeguard does not install, so this
    function fetches the same URL with the standard library. The file is written under a
    temporary name and renamed only after its checksum matches.

    Args:
        flag: MedMNIST 2D flag.
        root: destination folder, created if missing.
        url: address to fetch; defaults to the official Zenodo URL from ``medmnist.INFO``.

    Raises:
        DataError: the download failed or the checksum does not match; the message lists the
            manual steps.
    """
    info = dataset_info(flag)
    root = Path(root).expanduser()
    root.mkdir(parents=True, exist_ok=True)
    target = root / f"{info.flag}.npz"
    if target.exists() and _md5(target) == info.md5:
        return target
    source = url or info.url
    manual = (
        f"To fix it by hand: 1) download {info.url} on a machine with internet access; "
        f"2) check that its MD5 is {info.md5}; 3) copy it to {target}."
    )
    handle, partial = tempfile.mkstemp(prefix=f".{info.flag}-", suffix=".part", dir=root)
    os.close(handle)
    try:
        _logger.info("downloading %s from %s", info.flag, source)
        with urllib.request.urlopen(source, timeout=60) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, length=1 << 20)
        digest = _md5(Path(partial))
        if digest != info.md5:
            raise DataError(
                f"downloaded {info.flag}.npz has MD5 {digest}, expected {info.md5}. {manual}"
            )
        os.replace(partial, target)
    except OSError as error:
        raise DataError(f"download of {source} failed: {error}. {manual}") from error
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    return target


def _npz_path(info: DatasetInfo, root: Path) -> Path:
    path = root / f"{info.flag}.npz"
    if not path.is_file():
        raise DataError(
            f"dataset file {path} not found. Fix: put the official {info.flag}.npz there, "
            f"run with dataset.download=true to fetch it, or set dataset.root to the folder "
            f"that holds it."
        )
    return path


def _open_npz(path: Path):
    try:
        # allow_pickle=False: an npz whose arrays are pickled objects is rejected, not executed.
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(
            f"dataset file {path} is corrupt or not an npz archive ({error}). Fix: delete it and "
            f"copy or download the official file again."
        ) from error


def _read_array(archive, key: str, path: Path) -> np.ndarray:
    if key not in archive.files:
        raise DataError(
            f"dataset file {path} has no array {key!r} (found: {', '.join(archive.files)}). "
            f"Fix: use an official MedMNIST file, which has train/val/test images and labels."
        )
    try:
        return archive[key]
    except (OSError, ValueError, EOFError, MemoryError, zipfile.BadZipFile, zlib.error) as error:
        raise DataError(
            f"array {key!r} of {path} cannot be read ({error}); the file is corrupt. Fix: delete "
            f"it and copy or download the official file again."
        ) from error


def _validate_split(
    info: DatasetInfo,
    split: str,
    images: np.ndarray,
    labels: np.ndarray,
    path: Path,
    *,
    check_size: bool,
) -> None:
    where = f"{path} [{split}]"
    if images.dtype != np.uint8:
        raise DataError(f"{where}: images have dtype {images.dtype}, expected uint8")
    if info.n_channels == 1:
        expected_image = (IMAGE_SIZE, IMAGE_SIZE)
    else:
        expected_image = (IMAGE_SIZE, IMAGE_SIZE, info.n_channels)
    if images.shape[1:] != expected_image:
        raise DataError(
            f"{where}: images have shape {images.shape}, expected (N, "
            f"{', '.join(map(str, expected_image))}) for {info.flag} at {IMAGE_SIZE}×{IMAGE_SIZE}"
        )
    n = images.shape[0]
    label_width = info.num_outputs if info.task.is_multi_label else 1
    if labels.shape != (n, label_width):
        raise DataError(
            f"{where}: labels have shape {labels.shape}, expected ({n}, {label_width}) "
            f"for a {info.task.value} task"
        )
    if not np.issubdtype(labels.dtype, np.integer):
        raise DataError(f"{where}: labels have dtype {labels.dtype}, expected an integer dtype")
    upper = 1 if info.task.is_multi_label else info.num_outputs - 1
    if n and (labels.min() < 0 or labels.max() > upper):
        raise DataError(
            f"{where}: label values span [{labels.min()}, {labels.max()}], expected [0, {upper}]"
        )
    expected_n = info.n_samples[split]
    if check_size and n != expected_n:
        raise DataError(
            f"{where}: {n} images, but the official {info.flag} {split} split has {expected_n}. "
            f"Fix: use the official file, or pass check_size=False for a deliberate subset."
        )


def _md5(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
