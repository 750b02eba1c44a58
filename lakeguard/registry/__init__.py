"""Model registry: the only place a model that passed the release gate is written to.

:class:`LocalRegistry` is the embedded default. It stores each version in a local folder laid out
as the object store will be: ``<root>/<model_name>/<version>/`` with the model, its card, its audit
record and a ``manifest.json`` of sizes and SHA-256 digests.
"""

from lakeguard.registry.local import LocalRegistry, PublishedVersion
from lakeguard.registry.manifest import (
    AUDIT_OBJECT,
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    MODEL_CARD_OBJECT,
    MODEL_OBJECT,
    REQUIRED_OBJECTS,
    build_manifest,
    sha256_file,
    verify_manifest,
)

__all__ = [
    "AUDIT_OBJECT",
    "MANIFEST_NAME",
    "MANIFEST_SCHEMA",
    "MODEL_CARD_OBJECT",
    "MODEL_OBJECT",
    "REQUIRED_OBJECTS",
    "LocalRegistry",
    "PublishedVersion",
    "build_manifest",
    "sha256_file",
    "verify_manifest",
]
