"""Streaming SHA-256 of files, so that multi-GB model files never sit in memory whole."""

from __future__ import annotations

import hashlib
import os

_CHUNK_BYTES = 1 << 20  # 1 MiB


def sha256_file(path: str | os.PathLike) -> str:
    """Hash a file in 1 MiB chunks.

    Args:
        path: the file to hash.

    Returns:
        The lowercase hex SHA-256 digest of the file's bytes (64 characters).

    Raises:
        OSError: the file is missing or cannot be read, e.g. FileNotFoundError or IsADirectoryError.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        while chunk := stream.read(_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()
