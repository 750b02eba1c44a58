"""Model registry in a local folder, laid out as the object store will be.

Layout: ``<root>/<model_name>/<version>/{model.safetensors, model_card.json, audit.json,
manifest.json}``. A publish writes into ``<root>/<model_name>/.staging-<version>-<random>``, writes
the manifest last, verifies the folder against it and then renames the staging folder to
``<version>``. rename(2) of a folder is atomic within one filesystem, so a reader sees either no
version or a complete one. Readers ignore every folder whose name starts with ``.``.
"""

import hashlib
import json
import logging
import os
import secrets
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lakeguard.errors import RegistryError
from lakeguard.registry.manifest import (
    HASH_CHUNK_BYTES,
    MANIFEST_NAME,
    MODEL_OBJECT,
    build_manifest,
    check_object_keys,
    validate_segment,
    verify_manifest,
)

_logger = logging.getLogger(__name__)

_STAGING_PREFIX = ".staging-"


@dataclass(frozen=True)
class PublishedVersion:
    """A complete, verified model version in the registry.

    Attributes:
        uri: ``file://`` URI of the version folder.
        model_sha256: SHA-256 of ``model.safetensors``, 64 lowercase hex digits.
        manifest: The parsed ``manifest.json``.
    """

    uri: str
    model_sha256: str
    manifest: dict[str, Any]


class LocalRegistry:
    """Publish, list and verify model versions under a local root folder.

    Versions are immutable: a publish never overwrites an existing version.

    Args:
        root: The registry root folder. It is created on the first publish.

    Example:
        >>> import tempfile
        >>> registry = LocalRegistry(tempfile.mkdtemp())
        >>> registry.list_versions("resnet18-pneumonia")
        []
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not isinstance(root, (str, os.PathLike)) or not os.fspath(root):
            raise RegistryError(f"registry root must be a non-empty path, got {root!r}")
        self.root = Path(root)

    def publish(self, *, model_name: str, version: str, files: Mapping[str, Path]) -> PublishedVersion:
        """Copy a model and its records into the registry as a new, immutable version.

        Steps: validate the input, create a staging folder, copy and fsync each file, write the
        manifest last, verify the staging folder against it, then rename it to ``<version>``.
        Any failure removes the staging folder before the error propagates, so a failed publish
        leaves no version and no partial files behind. The ``<model_name>`` folder itself stays
        once created, because another publish may be using it.

        Args:
            model_name: The model name, a safe path segment (``[A-Za-z0-9][A-Za-z0-9._-]{0,127}``).
            version: The version, a safe path segment as for ``model_name``.
            files: Object key to source file. The keys must be exactly ``model.safetensors``,
                ``model_card.json`` and ``audit.json``.

        Returns:
            The published version.

        Raises:
            RegistryError: If a name or the key set is invalid, a source file is missing, the
                version already exists, or any copy, write, verification or rename fails. An
                underlying OSError is chained as the cause.
        """
        validate_segment(model_name, field="model_name")
        validate_segment(version, field="version")
        if not isinstance(files, Mapping):
            raise RegistryError(f"files must be a mapping of object key to path, got {type(files).__name__}")
        check_object_keys(files)
        sources = {key: Path(path) for key, path in files.items()}
        for key, source in sources.items():
            if not source.is_file():
                raise RegistryError(f"source of {key!r} not found or not a regular file: {source}")

        model_dir = self.root / model_name
        final_dir = model_dir / version
        self._check_version_absent(final_dir, model_name=model_name, version=version)
        _logger.info("publishing model=%s version=%s to %s", model_name, version, final_dir)

        staging_dir = model_dir / f"{_STAGING_PREFIX}{version}-{secrets.token_hex(8)}"
        staging_created = False
        try:
            model_dir.mkdir(parents=True, exist_ok=True)
            staging_dir.mkdir()
            staging_created = True
            manifest = self._stage(staging_dir, sources, model_name=model_name, version=version)
            _fsync_dir(staging_dir)
            # NOTE: rename(2) replaces an empty folder that appeared at final_dir since the check
            # above. A non-empty one, such as a concurrent publish of the same version, makes it
            # fail with ENOTEMPTY, which rolls this publish back.
            os.rename(staging_dir, final_dir)
        except BaseException as error:
            if staging_created:
                _remove_staging(staging_dir)
            if isinstance(error, RegistryError) or not isinstance(error, Exception):
                raise
            raise RegistryError(
                f"publish of model {model_name!r} version {version!r} failed and was rolled back: {error}"
            ) from error

        try:
            _fsync_dir(model_dir)
        except OSError as error:
            # The version is complete and visible, so only the durability of the rename is in doubt.
            _logger.warning("fsync of %s failed after publishing version %s: %s", model_dir, version, error)

        published = _published_version(final_dir, manifest)
        _logger.info(
            "published model=%s version=%s uri=%s model_sha256=%s",
            model_name,
            version,
            published.uri,
            published.model_sha256,
        )
        return published

    def list_versions(self, model_name: str) -> list[str]:
        """List the published versions of a model, sorted by name.

        A version is listed when its folder contains a manifest. Hidden and staging folders are
        skipped. The objects are not hashed here, so call :meth:`verify` before using a version.

        Args:
            model_name: The model name, a safe path segment.

        Returns:
            Version names in lexicographic order (``"1.10"`` sorts before ``"1.9"``); empty when the
            model has no versions.

        Raises:
            RegistryError: If ``model_name`` is invalid.
        """
        validate_segment(model_name, field="model_name")
        model_dir = self.root / model_name
        if not model_dir.is_dir():
            return []
        return sorted(
            entry.name
            for entry in model_dir.iterdir()
            if not entry.name.startswith(".") and entry.is_dir() and (entry / MANIFEST_NAME).is_file()
        )

    def verify(self, model_name: str, version: str) -> PublishedVersion:
        """Verify that a version is complete and unmodified.

        Args:
            model_name: The model name, a safe path segment.
            version: The version, a safe path segment.

        Returns:
            The verified version.

        Raises:
            RegistryError: If a name is invalid, the version does not exist or is incomplete, an
                object differs from the manifest, or the manifest names another model or version.
        """
        validate_segment(model_name, field="model_name")
        validate_segment(version, field="version")
        version_dir = self.root / model_name / version
        if not version_dir.is_dir():
            raise RegistryError(f"version {version!r} of model {model_name!r} not found under {self.root}")

        manifest = verify_manifest(version_dir)
        recorded = (manifest["model_name"], manifest["version"])
        if recorded != (model_name, version):
            raise RegistryError(
                f"{version_dir / MANIFEST_NAME} describes model {recorded[0]!r} version {recorded[1]!r}, "
                f"expected model {model_name!r} version {version!r}; the folder was moved or renamed"
            )
        return _published_version(version_dir, manifest)

    def _check_version_absent(self, final_dir: Path, *, model_name: str, version: str) -> None:
        if not os.path.lexists(final_dir):
            return
        try:
            verify_manifest(final_dir)
        except RegistryError as error:
            raise RegistryError(
                f"{final_dir} exists but is not a complete version ({error}). Inspect it and remove it "
                "by hand, or publish under a new version"
            ) from error
        raise RegistryError(
            f"version {version} of model {model_name} already exists; versions are immutable, "
            "publish under a new version"
        )

    @staticmethod
    def _stage(staging_dir: Path, sources: dict[str, Path], *, model_name: str, version: str) -> dict[str, Any]:
        """Copy the objects into ``staging_dir``, write the manifest last and verify the folder."""
        copied_sha256 = {}
        for key in sorted(sources):
            copied_sha256[key] = _copy_file(sources[key], staging_dir / key)

        manifest = build_manifest(
            {key: staging_dir / key for key in sources}, model_name=model_name, version=version
        )
        # The copy hashed the bytes it read, and the manifest hashed the bytes on disk. A mismatch
        # means the source changed during the copy or the write was corrupted.
        for entry in manifest["objects"]:
            if entry["sha256"] != copied_sha256[entry["key"]]:
                raise RegistryError(
                    f"object {entry['key']!r} changed while it was copied: read sha256 "
                    f"{copied_sha256[entry['key']]}, stored sha256 {entry['sha256']}. Publish again"
                )

        _write_manifest(staging_dir / MANIFEST_NAME, manifest)
        return verify_manifest(staging_dir)


def _copy_file(source: Path, destination: Path) -> str:
    """Copy ``source`` to the new file ``destination``, fsync it, and return the SHA-256 of the bytes read."""
    digest = hashlib.sha256()
    with open(source, "rb") as reader, open(destination, "xb") as writer:
        while chunk := reader.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
            writer.write(chunk)
        writer.flush()
        os.fsync(writer.fileno())
    return digest.hexdigest()


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    data = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode("utf-8")
    with open(path, "xb") as writer:
        writer.write(data)
        writer.flush()
        os.fsync(writer.fileno())


def _fsync_dir(path: Path) -> None:
    """Flush a folder's entries (created, renamed files) to disk."""
    descriptor = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _remove_staging(staging_dir: Path) -> None:
    if not os.path.lexists(staging_dir):
        return
    try:
        shutil.rmtree(staging_dir)
    except OSError as error:
        # The folder name starts with '.', so readers ignore the leftover.
        _logger.error("could not remove staging folder %s after a failed publish: %s", staging_dir, error)
    else:
        _logger.info("removed staging folder %s after a failed publish", staging_dir)


def _published_version(version_dir: Path, manifest: dict[str, Any]) -> PublishedVersion:
    model_sha256 = next(entry["sha256"] for entry in manifest["objects"] if entry["key"] == MODEL_OBJECT)
    return PublishedVersion(uri=version_dir.resolve().as_uri(), model_sha256=model_sha256, manifest=manifest)
