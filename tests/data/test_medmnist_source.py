"""Loading MedMNIST files: label shapes per task, and clear errors for bad files."""

import shutil

import numpy as np
import pytest

import lakeguard.data.medmnist_source as source
from lakeguard.data import DEFAULT_ROOT, dataset_info, download_flag, load_dataset, load_split
from lakeguard.errors import DataError
from lakeguard.tasks import Task


@pytest.mark.parametrize(
    ("flag", "task", "channels", "label_width"),
    [
        ("retinamnist", Task.ORDINAL, 3, 1),
        ("breastmnist", Task.BINARY, 1, 1),
        ("pneumoniamnist", Task.BINARY, 1, 1),
    ],
)
def test_bundled_flags_load_with_label_shapes(flag, task, channels, label_width):
    data = load_dataset(flag)
    assert data.info.task is task
    for split in (data.train, data.val, data.test):
        images, labels = split.tensors()
        assert images.shape[1:] == (channels, 28, 28)
        assert labels.shape == (len(split), label_width)
        assert float(images.min()) >= 0.0
        assert float(images.max()) <= 1.0
    assert len(data.train) == data.info.n_samples["train"]


def test_chestmnist_info_is_multi_label_with_14_outputs():
    info = dataset_info("chestmnist")
    assert info.task is Task.MULTI_LABEL
    assert info.num_outputs == 14


def _write_npz(path, **arrays):
    with open(path, "wb") as handle:
        np.savez(handle, **arrays)


def test_multi_label_labels_are_n_by_14(tmp_path):
    """A synthetic ChestMNIST-shaped file (random pixels, not medical data) checks the (N, 14) path."""
    rng = np.random.default_rng(0)
    sizes = {"train": 12, "val": 6, "test": 6}
    arrays = {}
    for split, n in sizes.items():
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 14), dtype=np.uint8)
    _write_npz(tmp_path / "chestmnist.npz", **arrays)
    data = load_dataset("chestmnist", root=tmp_path, check_size=False)
    _, labels = data.train.tensors()
    assert labels.shape == (12, 14)
    # With the official sizes checked, the small synthetic file is rejected by name.
    with pytest.raises(DataError, match="official chestmnist train split has 78468"):
        load_split("chestmnist", "train", root=tmp_path)


def test_unknown_flag_names_the_flag():
    with pytest.raises(DataError, match="unknown MedMNIST flag 'retinamnistx'"):
        load_split("retinamnistx", "train")


def test_3d_flag_is_rejected():
    with pytest.raises(DataError, match="3D dataset"):
        dataset_info("organmnist3d")


def test_missing_file_names_path_and_fix(tmp_path):
    with pytest.raises(DataError, match=r"breastmnist\.npz not found.*dataset\.download=true"):
        load_split("breastmnist", "train", root=tmp_path)


def test_corrupt_npz_names_path(tmp_path):
    original = (DEFAULT_ROOT / "breastmnist.npz").read_bytes()
    (tmp_path / "breastmnist.npz").write_bytes(original[: len(original) // 3])
    with pytest.raises(DataError, match=r"breastmnist\.npz.*corrupt"):
        load_split("breastmnist", "train", root=tmp_path)


def test_text_file_posing_as_npz_is_corrupt(tmp_path):
    (tmp_path / "breastmnist.npz").write_text("not an archive")
    with pytest.raises(DataError, match="corrupt"):
        load_split("breastmnist", "val", root=tmp_path)


def _official(flag):
    with np.load(DEFAULT_ROOT / f"{flag}.npz") as archive:
        return {key: archive[key] for key in archive.files}


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda a: a.update(train_images=a["train_images"][:, :27]), r"images have shape \(546, 27, 28\)"),
        (lambda a: a.update(train_labels=a["train_labels"][:-1]), r"labels have shape \(545, 1\)"),
        (lambda a: a.update(train_labels=a["train_labels"] + 5), r"label values span \[5, 6\], expected \[0, 1\]"),
        (lambda a: a.update(train_images=a["train_images"].astype(np.float32)), "dtype float32, expected uint8"),
        (lambda a: a.pop("train_labels"), "no array 'train_labels'"),
        (lambda a: a.update(train_images=a["train_images"][:500], train_labels=a["train_labels"][:500]), "500 images, but the official"),
    ],
)
def test_malformed_split_is_rejected(tmp_path, mutate, message):
    arrays = _official("breastmnist")
    mutate(arrays)
    _write_npz(tmp_path / "breastmnist.npz", **arrays)
    with pytest.raises(DataError, match=message):
        load_split("breastmnist", "train", root=tmp_path)


def test_pickled_object_array_is_not_loaded(tmp_path):
    arrays = _official("breastmnist")
    arrays["train_images"] = np.array([object()] * 3, dtype=object)
    _write_npz(tmp_path / "breastmnist.npz", **arrays)
    with pytest.raises(DataError, match="train_images"):
        load_split("breastmnist", "train", root=tmp_path)


def test_download_verifies_md5(tmp_path):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copy(DEFAULT_ROOT / "breastmnist.npz", mirror / "breastmnist.npz")
    target = download_flag("breastmnist", tmp_path / "root", url=(mirror / "breastmnist.npz").as_uri())
    assert target.read_bytes() == (DEFAULT_ROOT / "breastmnist.npz").read_bytes()


def test_download_with_wrong_checksum_leaves_nothing(tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"tampered")
    root = tmp_path / "root"
    with pytest.raises(DataError, match="MD5 .* expected 750601b1f35ba3300ea97c75c52ff8f6"):
        download_flag("breastmnist", root, url=bad.as_uri())
    assert list(root.iterdir()) == []


def test_default_root_is_used_for_none_and_empty():
    assert source.resolve_root(None) == DEFAULT_ROOT
    assert source.resolve_root("") == DEFAULT_ROOT
