"""Manifest of one published model version: the list of its objects with size and SHA-256.

A version contains exactly the objects in :data:`REQUIRED_OBJECTS` plus ``manifest.json``, which is
written last. The keys are the object names inside the version folder, so the same manifest
describes a local folder ``<root>/<model_name>/<version>/`` and an object-store prefix of the same
shape. A version is complete if and only if its manifest exists and :func:`verify_manifest` passes.

Manifest layout (schema ``lakeguard.manifest/v1``)::

    {
      "schema": "lakeguard.manifest/v1",
      "model_name": "pneumonia-resnet",
      "version": "1.0.0",
      "created_at": "2025-01-31T12:00:00Z",   # ISO-8601, UTC
      "objects": [                            # sorted by key
        {"key": "audit.json", "size_bytes": 1234, "sha256": "<64 lowercase hex digits>"},
        ...
      ]
    }
"""

import hashlib
import json
import logging
import os
import re
import stat
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lakeguard.errors import RegistryError

_logger = logging.getLogger(__name__)

MANIFEST_SCHEMA = "lakeguard.manifest/v1"
MANIFEST_NAME = "manifest.json"

MODEL_OBJECT = "model.safetensors"
MODEL_CARD_OBJECT = "model_card.json"
AUDIT_OBJECT = "audit.json"
# A registry receives the released model and its records only, never images or canary data.
REQUIRED_OBJECTS = frozenset({MODEL_OBJECT, MODEL_CARD_OBJECT, AUDIT_OBJECT})

# 1 MiB reads keep memory flat for multi-GB model files.
HASH_CHUNK_BYTES = 1 << 20

# A name that is safe as one path segment and as one object-store key segment. It cannot start
# with '.', so it never collides with hidden or staging folders.
_SEGMENT_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


def validate_segment(value: object, *, field: str) -> str:
    """Raise RegistryError unless ``value`` is a safe single path segment.

    A segment is 1 to 128 characters from ``[A-Za-z0-9._-]``, starts with a letter or digit and
    does not contain ``..``. Slashes, whitespace and control characters are rejected.

    Args:
        value: The candidate model name, version or object key.
        field: Name of the value in the error message (``"model_name"``, ``"version"``).

    Returns:
        The value, unchanged.

    Raises:
        RegistryError: If the value is not a string or not a safe segment; the message names it.
    """
    if not isinstance(value, str):
        raise RegistryError(f"{field} must be a string, got {type(value).__name__} {value!r}")
    if _SEGMENT_PATTERN.fullmatch(value) is None or ".." in value:
        raise RegistryError(
            f"invalid {field} {value!r}: expected 1-128 characters from [A-Za-z0-9._-], starting "
            "with a letter or digit, without '..' or slashes; rename it, e.g. 'resnet18-pneumonia' "
            "or '1.0.0'"
        )
    return value


def check_object_keys(keys: object) -> None:
    """Raise RegistryError unless ``keys`` is exactly :data:`REQUIRED_OBJECTS`.

    Args:
        keys: The object keys of one version, any iterable of strings.

    Raises:
        RegistryError: If a required object is missing or an extra one is present. The message
            lists both.
    """
    key_set = set(keys)
    missing = sorted(REQUIRED_OBJECTS - key_set)
    extra = sorted(key_set - REQUIRED_OBJECTS, key=str)
    if missing or extra:
        raise RegistryError(
            f"a model version must contain exactly {sorted(REQUIRED_OBJECTS)}, got missing {missing} and "
            f"unexpected {extra}. Images, canaries and other run outputs are never published"
        )


def sha256_file(path: Path) -> str:
    """Hash a file in chunks of :data:`HASH_CHUNK_BYTES`.

    Args:
        path: The file to hash.

    Returns:
        The SHA-256 digest as 64 lowercase hex digits.

    Raises:
        OSError: If the file cannot be read.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(HASH_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(files: Mapping[str, Path], *, model_name: str, version: str) -> dict[str, Any]:
    """Build the manifest of a version from its object files.

    Args:
        files: Object key (file name inside the version folder) to the file holding its bytes.
            The keys must be exactly :data:`REQUIRED_OBJECTS`.
        model_name: The model name, a safe path segment.
        version: The version, a safe path segment.

    Returns:
        The manifest as a JSON-serializable dict (see the module docstring), with ``created_at``
        set to the current UTC time.

    Raises:
        RegistryError: If a name or key is invalid, the key set is wrong, or a file is missing or
            not a regular file.
    """
    validate_segment(model_name, field="model_name")
    validate_segment(version, field="version")
    if not isinstance(files, Mapping):
        raise RegistryError(f"files must be a mapping of object key to path, got {type(files).__name__}")
    for key in files:
        validate_segment(key, field="object key")
    check_object_keys(files)

    objects = []
    for key in sorted(files):
        path = Path(files[key])
        if not path.is_file():
            raise RegistryError(f"object {key!r}: {path} is missing or not a regular file")
        objects.append({"key": key, "size_bytes": path.stat().st_size, "sha256": sha256_file(path)})

    return {
        "schema": MANIFEST_SCHEMA,
        "model_name": model_name,
        "version": version,
        "created_at": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "objects": objects,
    }


def verify_manifest(version_dir: Path) -> dict[str, Any]:
    """Check that a version folder contains exactly the objects its manifest lists, byte for byte.

    The checks run in this order: the manifest exists and parses, its fields are well formed, every
    listed object is a regular file with the listed size and SHA-256, and the folder contains
    nothing that the manifest does not list. Sizes are compared before hashing, so a truncated
    object fails without being read.

    Args:
        version_dir: The version folder, ``<root>/<model_name>/<version>`` or a staging folder.

    Returns:
        The parsed manifest.

    Raises:
        RegistryError: If the folder or manifest is missing (an incomplete version), the manifest is
            malformed, an object is missing, has the wrong size or SHA-256, or an unlisted entry is
            present. The message names the object and the expected and actual values.
    """
    version_dir = Path(version_dir)
    if not version_dir.is_dir():
        raise RegistryError(f"version folder {version_dir} does not exist")

    manifest = _read_manifest(version_dir)
    objects = _check_manifest_fields(manifest, version_dir)

    for entry in objects:
        _check_object(version_dir, entry)

    listed = {entry["key"] for entry in objects} | {MANIFEST_NAME}
    unlisted = sorted(name for name in os.listdir(version_dir) if name not in listed)
    if unlisted:
        raise RegistryError(
            f"version folder {version_dir} contains {unlisted}, which the manifest does not list. "
            "A version must not be modified after publishing, so publish a new version instead"
        )

    _logger.debug("verified %s: %d objects", version_dir, len(objects))
    return manifest


def _read_manifest(version_dir: Path) -> dict[str, Any]:
    manifest_path = version_dir / MANIFEST_NAME
    if not manifest_path.is_file():
        raise RegistryError(
            f"incomplete version {version_dir}: {MANIFEST_NAME} is missing, so the version was "
            "never fully published. Remove the folder and publish again"
        )
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RegistryError(f"cannot read {manifest_path}: {error}") from error
    if not isinstance(manifest, dict):
        raise RegistryError(f"{manifest_path} must contain a JSON object, got {type(manifest).__name__}")
    return manifest


def _check_manifest_fields(manifest: dict[str, Any], version_dir: Path) -> list[dict[str, Any]]:
    """Validate the manifest fields and return its object entries."""
    where = version_dir / MANIFEST_NAME
    if manifest.get("schema") != MANIFEST_SCHEMA:
        raise RegistryError(f"{where}: schema must be {MANIFEST_SCHEMA!r}, got {manifest.get('schema')!r}")
    for field in ("model_name", "version"):
        try:
            validate_segment(manifest.get(field), field=field)
        except RegistryError as error:
            raise RegistryError(f"{where}: {error}") from error
    created_at = manifest.get("created_at")
    try:
        datetime.fromisoformat(created_at)
    except (TypeError, ValueError) as error:
        raise RegistryError(f"{where}: created_at must be an ISO-8601 time, got {created_at!r}") from error

    objects = manifest.get("objects")
    if not isinstance(objects, list) or not all(isinstance(entry, dict) for entry in objects):
        raise RegistryError(f"{where}: objects must be a list of objects, got {objects!r}")
    keys = [entry.get("key") for entry in objects]
    for key in keys:
        # A key like '../x' would make verification read outside the version folder.
        try:
            validate_segment(key, field="object key")
        except RegistryError as error:
            raise RegistryError(f"{where}: {error}") from error
    if len(set(keys)) != len(keys):
        raise RegistryError(f"{where}: object keys must be unique, got {keys}")
    try:
        check_object_keys(keys)
    except RegistryError as error:
        raise RegistryError(f"{where}: {error}") from error

    for entry in objects:
        size = entry.get("size_bytes")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise RegistryError(
                f"{where}: object {entry['key']!r} size_bytes must be an integer >= 0, got {size!r}"
            )
        sha = entry.get("sha256")
        if not isinstance(sha, str) or _SHA256_PATTERN.fullmatch(sha) is None:
            raise RegistryError(
                f"{where}: object {entry['key']!r} sha256 must be 64 lowercase hex digits, got {sha!r}"
            )
    return objects


def _check_object(version_dir: Path, entry: dict[str, Any]) -> None:
    key = entry["key"]
    path = version_dir / key
    try:
        # lstat: a symlink could point outside the registry, so it is rejected, not followed.
        status = path.lstat()
    except FileNotFoundError as error:
        raise RegistryError(f"object {key!r} is listed in the manifest but missing from {version_dir}") from error
    if not stat.S_ISREG(status.st_mode):
        raise RegistryError(f"object {key!r} in {version_dir} must be a regular file, not a link or folder")

    if status.st_size != entry["size_bytes"]:
        raise RegistryError(
            f"object {key!r} in {version_dir} has the wrong size: expected {entry['size_bytes']} bytes, "
            f"actual {status.st_size} bytes"
        )
    actual_sha = sha256_file(path)
    if actual_sha != entry["sha256"]:
        raise RegistryError(
            f"object {key!r} in {version_dir} has the wrong SHA-256: expected {entry['sha256']}, "
            f"actual {actual_sha}"
        )
