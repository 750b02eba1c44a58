"""Model files: safetensors weights plus a JSON description, and safe loading of foreign files.

A model folder holds ``model.safetensors`` (the state dict, tensors only) and ``model.json`` (a
:class:`ModelMeta`). Files from elsewhere may also be a bare ``.safetensors`` file or a PyTorch
``.pt``/``.pth`` file; the latter is read with ``torch.load(weights_only=True)``, which rejects
pickled code instead of running it.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from lakeguard.errors import ModelFileError
from lakeguard.models.registry import ARCHITECTURES, build_model

_logger = logging.getLogger(__name__)

WEIGHTS_FILE = "model.safetensors"
META_FILE = "model.json"
_PICKLE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


@dataclass(frozen=True)
class ModelMeta:
    """Description needed to rebuild a model from its weights.

    Attributes:
        arch: registered architecture name.
        dataset: MedMNIST flag the model classifies.
        task: task string of that flag (``lakeguard.tasks.Task`` value).
        in_channels: image channels.
        num_outputs: classes, or labels for multi-label tasks.
        image_size: input height and width.
        arch_options: keyword options of the architecture, such as ``{"hidden": 1024}``.
    """

    arch: str
    dataset: str
    task: str
    in_channels: int
    num_outputs: int
    image_size: int = 28
    arch_options: dict[str, Any] = field(default_factory=dict)

    def build(self) -> nn.Module:
        """Build a freshly initialised model of this description."""
        return build_model(
            self.arch,
            in_channels=self.in_channels,
            num_outputs=self.num_outputs,
            image_size=self.image_size,
            **self.arch_options,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelMeta:
        try:
            return cls(**data)
        except TypeError as error:
            raise ModelFileError(f"invalid model description {data!r}: {error}") from error


def save_model(model: nn.Module, directory: str | os.PathLike, meta: ModelMeta) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``directory``; return the weights path.

    Only the architecture's own state dict is written, so tensors that rode along in an imported
    file are dropped on export.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    weights = directory / WEIGHTS_FILE
    save_file(state, str(weights), metadata={"arch": meta.arch, "dataset": meta.dataset})
    (directory / META_FILE).write_text(json.dumps(meta.to_dict(), indent=2, sort_keys=True) + "\n")
    return weights


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a ``.safetensors`` file or, safely, from a PyTorch pickle file.

    Raises:
        ModelFileError: missing file, unknown suffix, corrupt file, or a pickle that contains
            anything but tensors (which ``weights_only=True`` refuses to unpickle).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"model file {path} not found; check model.uri")
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        try:
            return load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as error:
            raise ModelFileError(f"model file {path} is not a valid safetensors file: {error}") from error
    if suffix in _PICKLE_SUFFIXES:
        try:
            loaded = torch.load(path, map_location="cpu", weights_only=True)
        except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError, IndexError) as error:
            raise ModelFileError(
                f"model file {path} could not be loaded with weights_only=True: it contains pickled "
                f"objects other than tensors, or it is corrupt. lakeguard never unpickles code. "
                f"Fix: export the state dict with safetensors.torch.save_file and pass that file. "
                f"Cause: {type(error).__name__}: {(str(error).splitlines() or [''])[0]}"
            ) from error
        if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, dict) or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in loaded.items()
        ):
            raise ModelFileError(
                f"model file {path} does not contain a state dict (a mapping of names to tensors); "
                f"got {type(loaded).__name__}"
            )
        return loaded
    raise ModelFileError(
        f"model file {path} has suffix {suffix!r}; use .safetensors (preferred) or a PyTorch "
        f"state dict saved as {', '.join(_PICKLE_SUFFIXES)}"
    )


def load_model(path: str | os.PathLike, meta: ModelMeta | None = None) -> tuple[nn.Module, ModelMeta, list[str]]:
    """Load a model folder or file into its architecture.

    Args:
        path: a model folder (``model.safetensors`` + ``model.json``) or a weights file.
        meta: the architecture description; required for a bare weights file, and, when given
            for a folder, it must agree with the folder's ``model.json``.

    Returns:
        The model in eval mode, its description, and the names of tensors in the file that the
        architecture does not have (sorted). Those extra tensors are a classic hiding place for
        exfiltrated data: the caller reports them and never exports them.

    Raises:
        ModelFileError: unreadable file, unknown architecture, missing tensors, shape mismatch
            or non-finite weights.
    """
    path = Path(path)
    if path.is_dir():
        meta_path = path / META_FILE
        if not meta_path.is_file():
            raise ModelFileError(f"model folder {path} has no {META_FILE}")
        try:
            folder_meta = ModelMeta.from_dict(json.loads(meta_path.read_text()))
        except json.JSONDecodeError as error:
            raise ModelFileError(f"{meta_path} is not valid JSON: {error}") from error
        if meta is not None and (meta.arch, meta.dataset) != (folder_meta.arch, folder_meta.dataset):
            raise ModelFileError(
                f"model folder {path} contains arch={folder_meta.arch!r} for {folder_meta.dataset!r}, "
                f"but the run expects arch={meta.arch!r} for {meta.dataset!r}"
            )
        meta = folder_meta
        path = path / WEIGHTS_FILE
    if meta is None:
        raise ModelFileError(f"model file {path} needs an architecture description: set model.arch")
    if meta.arch not in ARCHITECTURES:
        raise ModelFileError(f"unknown architecture {meta.arch!r}; use one of {', '.join(sorted(ARCHITECTURES))}")

    state = load_state_dict_file(path)
    model = meta.build()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    if missing:
        raise ModelFileError(
            f"model file {path} lacks {len(missing)} tensors of architecture {meta.arch!r} "
            f"(first: {', '.join(missing[:3])}); check model.arch and the dataset"
        )
    for name, tensor in expected.items():
        if state[name].shape != tensor.shape:
            raise ModelFileError(
                f"tensor {name!r} in {path} has shape {tuple(state[name].shape)}, architecture "
                f"{meta.arch!r} for {meta.dataset} expects {tuple(tensor.shape)}"
            )
        if state[name].is_floating_point() and not torch.isfinite(state[name]).all():
            raise ModelFileError(f"tensor {name!r} in {path} contains NaN or infinite values")
    extra = sorted(set(state) - set(expected))
    if extra:
        _logger.warning("model file %s contains %d tensors the architecture does not use: %s", path, len(extra), extra[:5])
    model.load_state_dict({k: state[k] for k in expected})
    model.eval()
    return model, meta, extra
