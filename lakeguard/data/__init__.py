"""MedMNIST data access: dataset metadata, split loading with validation, and downloads."""

from lakeguard.data.medmnist_source import (
    DEFAULT_ROOT,
    DatasetInfo,
    MedMNISTData,
    Split,
    dataset_info,
    download_flag,
    load_dataset,
    load_split,
    resolve_root,
)

__all__ = [
    "DEFAULT_ROOT",
    "DatasetInfo",
    "MedMNISTData",
    "Split",
    "dataset_info",
    "download_flag",
    "load_dataset",
    "load_split",
    "resolve_root",
]
