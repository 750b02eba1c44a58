"""Tests of the local model registry and its manifest."""

import hashlib
import json
import os
import random
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest

from lakeguard.errors import RegistryError
from lakeguard.registry import (
    MANIFEST_NAME,
    MANIFEST_SCHEMA,
    REQUIRED_OBJECTS,
    LocalRegistry,
    build_manifest,
    sha256_file,
    verify_manifest,
)
from lakeguard.registry import local as local_module

MODEL_NAME = "resnet18-pneumonia"


@pytest.fixture()
def sources(tmp_path: Path) -> dict[str, Path]:
    """Source files of one version, with distinct random contents."""
    source_dir = tmp_path / "run"
    source_dir.mkdir()
    rng = random.Random(0)
    sizes = {"model.safetensors": 2**20 + 17, "model_card.json": 211, "audit.json": 1024}
    files = {}
    for key, size in sizes.items():
        path = source_dir / key
        path.write_bytes(rng.randbytes(size))
        files[key] = path
    return files


@pytest.fixture()
def registry(tmp_path: Path) -> LocalRegistry:
    return LocalRegistry(tmp_path / "registry")


def snapshot(root: Path) -> dict[str, str]:
    """Map every path under ``root`` to the SHA-256 of its bytes, or 'dir' for a folder."""
    tree = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            tree[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            tree[os.path.relpath(path, root)] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    return tree


def rewrite_manifest(version_dir: Path, edit) -> None:
    path = version_dir / MANIFEST_NAME
    manifest = json.loads(path.read_text())
    edit(manifest)
    path.write_text(json.dumps(manifest))


# --- manifest -----------------------------------------------------------------------------------


def test_sha256_file_matches_hashlib(sources):
    path = sources["model.safetensors"]  # larger than one 1 MiB chunk

    assert sha256_file(path) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_build_manifest_lists_objects(sources):
    manifest = build_manifest(sources, model_name=MODEL_NAME, version="1.0.0")

    assert manifest["schema"] == MANIFEST_SCHEMA
    assert manifest["model_name"] == MODEL_NAME
    assert manifest["version"] == "1.0.0"
    created_at = datetime.fromisoformat(manifest["created_at"])
    assert created_at.utcoffset() == timezone.utc.utcoffset(None)
    assert [entry["key"] for entry in manifest["objects"]] == sorted(REQUIRED_OBJECTS)
    for entry in manifest["objects"]:
        data = sources[entry["key"]].read_bytes()
        assert entry["size_bytes"] == len(data)
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda files: files.pop("audit.json"), r"missing \['audit.json'\]"),
        (lambda files: files.update({"canary.npy": files["audit.json"]}), r"unexpected \['canary.npy'\]"),
        (lambda files: files.update({"../escape": files["audit.json"]}), r"invalid object key '../escape'"),
    ],
    ids=["missing", "extra", "unsafe-key"],
)
def test_build_manifest_rejects_key_sets(sources, change, match):
    change(sources)

    with pytest.raises(RegistryError, match=match):
        build_manifest(sources, model_name=MODEL_NAME, version="1")


def test_build_manifest_rejects_missing_file(sources, tmp_path):
    sources["audit.json"] = tmp_path / "absent.json"

    with pytest.raises(RegistryError, match="object 'audit.json'.*missing"):
        build_manifest(sources, model_name=MODEL_NAME, version="1")


def test_verify_manifest_missing_is_incomplete(tmp_path):
    (tmp_path / "model.safetensors").write_bytes(b"weights")

    with pytest.raises(RegistryError, match="incomplete version.*manifest.json is missing"):
        verify_manifest(tmp_path)


# --- publish ------------------------------------------------------------------------------------


def test_publish_writes_layout(registry, sources):
    published = registry.publish(model_name=MODEL_NAME, version="1.0.0", files=sources)

    version_dir = registry.root / MODEL_NAME / "1.0.0"
    assert sorted(os.listdir(version_dir)) == sorted(REQUIRED_OBJECTS | {MANIFEST_NAME})
    for key, source in sources.items():
        assert (version_dir / key).read_bytes() == source.read_bytes()
    assert published.uri == version_dir.resolve().as_uri()
    assert published.uri.startswith("file://")
    expected_model_sha = hashlib.sha256(sources["model.safetensors"].read_bytes()).hexdigest()
    assert published.model_sha256 == expected_model_sha
    assert published.manifest == json.loads((version_dir / MANIFEST_NAME).read_text())


def test_publish_manifest_matches_sources(registry, sources):
    published = registry.publish(model_name=MODEL_NAME, version="1.0.0", files=sources)

    manifest = published.manifest
    assert manifest["schema"] == MANIFEST_SCHEMA
    assert (manifest["model_name"], manifest["version"]) == (MODEL_NAME, "1.0.0")
    listed = {entry["key"]: entry for entry in manifest["objects"]}
    assert set(listed) == REQUIRED_OBJECTS
    for key, source in sources.items():
        data = source.read_bytes()
        assert listed[key]["size_bytes"] == len(data)
        assert listed[key]["sha256"] == hashlib.sha256(data).hexdigest()


def test_publish_leaves_no_staging(registry, sources):
    registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    assert os.listdir(registry.root / MODEL_NAME) == ["1"]


def test_publish_writes_manifest_last(registry, sources, monkeypatch):
    written = []
    original_copy = local_module._copy_file
    original_write = local_module._write_manifest

    def recording_copy(source, destination):
        written.append(Path(destination).name)
        return original_copy(source, destination)

    def recording_write(path, manifest):
        written.append(Path(path).name)
        original_write(path, manifest)

    monkeypatch.setattr(local_module, "_copy_file", recording_copy)
    monkeypatch.setattr(local_module, "_write_manifest", recording_write)

    registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    assert written[-1] == MANIFEST_NAME
    assert sorted(written[:-1]) == sorted(REQUIRED_OBJECTS)


def test_publish_rejects_existing_version(registry, sources):
    registry.publish(model_name=MODEL_NAME, version="1", files=sources)
    before = snapshot(registry.root)
    sources["audit.json"].write_text("{}")

    expected = "version 1 of model resnet18-pneumonia already exists; versions are immutable"
    with pytest.raises(RegistryError, match=expected):
        registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    assert snapshot(registry.root) == before


def test_publish_rejects_incomplete_existing_folder(registry, sources):
    (registry.root / MODEL_NAME / "1").mkdir(parents=True)
    before = snapshot(registry.root)

    with pytest.raises(RegistryError, match="exists but is not a complete version"):
        registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    assert snapshot(registry.root) == before


@pytest.mark.parametrize(
    "name",
    ["", ".", "..", "../escape", "a/b", "a\\b", ".hidden", "-dash", "a..b", "with space", "line\n", "é", "x" * 129],
)
@pytest.mark.parametrize("field", ["model_name", "version"])
def test_publish_rejects_unsafe_names(registry, sources, field, name):
    arguments = {"model_name": MODEL_NAME, "version": "1", field: name}

    with pytest.raises(RegistryError, match=f"invalid {field} {re.escape(repr(name)[:20])}"):
        registry.publish(files=sources, **arguments)

    assert not registry.root.exists()


def test_publish_accepts_longest_name(registry, sources):
    version = "v" + "1" * 127

    registry.publish(model_name=MODEL_NAME, version=version, files=sources)

    assert registry.list_versions(MODEL_NAME) == [version]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda files: files.pop("model.safetensors"), r"missing \['model.safetensors'\]"),
        (lambda files: files.pop("model_card.json"), r"missing \['model_card.json'\]"),
        (lambda files: files.update({"image_0001.png": files["audit.json"]}), r"unexpected \['image_0001.png'\]"),
        (lambda files: files.update({"canaries.npz": files["audit.json"]}), r"unexpected \['canaries.npz'\]"),
        (lambda files: files.update({MANIFEST_NAME: files["audit.json"]}), r"unexpected \['manifest.json'\]"),
        (lambda files: files.update({"model.pt": files.pop("model.safetensors")}), r"missing \['model.safetensors'\]"),
    ],
    ids=["no-model", "no-card", "image", "canaries", "manifest", "renamed-model"],
)
def test_publish_rejects_object_sets(registry, sources, change, match):
    change(sources)

    with pytest.raises(RegistryError, match=match):
        registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    assert not registry.root.exists()


def test_publish_rejects_missing_source(registry, sources, tmp_path):
    sources["audit.json"] = tmp_path / "absent.json"

    with pytest.raises(RegistryError, match="source of 'audit.json' not found"):
        registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    assert not registry.root.exists()


def test_failed_copy_rolls_back(registry, sources, monkeypatch):
    registry.publish(model_name=MODEL_NAME, version="1", files=sources)
    before = snapshot(registry.root)
    original_copy = local_module._copy_file
    calls = []

    def failing_copy(source, destination):
        calls.append(destination)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original_copy(source, destination)

    monkeypatch.setattr(local_module, "_copy_file", failing_copy)

    with pytest.raises(RegistryError, match="version '2' failed and was rolled back") as caught:
        registry.publish(model_name=MODEL_NAME, version="2", files=sources)

    assert isinstance(caught.value.__cause__, OSError)
    assert caught.value.__cause__.errno == 28
    assert len(calls) == 2
    assert snapshot(registry.root) == before
    assert registry.list_versions(MODEL_NAME) == ["1"]


def test_failed_copy_of_new_model_leaves_no_version(registry, sources, monkeypatch):
    def failing_copy(source, destination):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(local_module, "_copy_file", failing_copy)

    with pytest.raises(RegistryError, match="rolled back") as caught:
        registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    assert isinstance(caught.value.__cause__, OSError)
    assert registry.list_versions(MODEL_NAME) == []
    assert os.listdir(registry.root / MODEL_NAME) == []


def test_failed_manifest_write_rolls_back(registry, sources, monkeypatch):
    def failing_write(path, manifest):
        Path(path).write_bytes(b'{"schema": ')  # a torn write
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(local_module, "_write_manifest", failing_write)

    with pytest.raises(RegistryError, match="rolled back"):
        registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    assert os.listdir(registry.root / MODEL_NAME) == []


def test_failed_rename_rolls_back(registry, sources, monkeypatch):
    def failing_rename(source, destination):
        raise OSError(39, "Directory not empty")

    monkeypatch.setattr(local_module.os, "rename", failing_rename)

    with pytest.raises(RegistryError, match="rolled back") as caught:
        registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    assert caught.value.__cause__.errno == 39
    assert os.listdir(registry.root / MODEL_NAME) == []


def test_failed_staging_verification_rolls_back(registry, sources, monkeypatch):
    original_write = local_module._write_manifest

    def corrupting_write(path, manifest):
        manifest["objects"][0]["sha256"] = "0" * 64
        original_write(path, manifest)

    monkeypatch.setattr(local_module, "_write_manifest", corrupting_write)

    with pytest.raises(RegistryError, match="wrong SHA-256") as caught:
        registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    assert caught.value.__cause__ is None
    assert os.listdir(registry.root / MODEL_NAME) == []


def test_interrupted_publish_rolls_back(registry, sources, monkeypatch):
    def interrupted_copy(source, destination):
        raise KeyboardInterrupt

    monkeypatch.setattr(local_module, "_copy_file", interrupted_copy)

    with pytest.raises(KeyboardInterrupt):
        registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    assert os.listdir(registry.root / MODEL_NAME) == []


# --- readers ------------------------------------------------------------------------------------


def test_list_versions_skips_hidden_and_incomplete(registry, sources):
    for version in ("2.0", "1.10", "1.9"):
        registry.publish(model_name=MODEL_NAME, version=version, files=sources)
    model_dir = registry.root / MODEL_NAME
    (model_dir / ".staging-3.0-abcd").mkdir()
    (model_dir / ".staging-3.0-abcd" / MANIFEST_NAME).write_text("{}")
    (model_dir / "4.0").mkdir()  # no manifest: incomplete
    (model_dir / "notes.txt").write_text("not a version")

    assert registry.list_versions(MODEL_NAME) == ["1.10", "1.9", "2.0"]


def test_list_versions_unknown_model(registry):
    assert registry.list_versions("unknown-model") == []


def test_list_versions_rejects_unsafe_name(registry):
    with pytest.raises(RegistryError, match="invalid model_name '../x'"):
        registry.list_versions("../x")


def test_verify_returns_published(registry, sources):
    published = registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    assert registry.verify(MODEL_NAME, "1") == published


def test_verify_unknown_version(registry, sources):
    registry.publish(model_name=MODEL_NAME, version="1", files=sources)

    with pytest.raises(RegistryError, match="version '2' of model 'resnet18-pneumonia' not found"):
        registry.verify(MODEL_NAME, "2")


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("tamper", "match"),
    [
        (
            lambda d: flip_last_byte(d / "model.safetensors"),
            r"object 'model.safetensors' .* wrong SHA-256: expected [0-9a-f]{64}, actual [0-9a-f]{64}",
        ),
        (
            lambda d: (d / "audit.json").write_bytes((d / "audit.json").read_bytes()[:-1]),
            r"object 'audit.json' .* wrong size: expected 1024 bytes, actual 1023 bytes",
        ),
        (
            lambda d: (d / "model_card.json").unlink(),
            r"object 'model_card.json' is listed in the manifest but missing",
        ),
        (
            lambda d: (d / "image.png").write_bytes(b"\x89PNG"),
            r"contains \['image.png'\], which the manifest does not list",
        ),
        (lambda d: (d / "extra").mkdir(), r"contains \['extra'\], which the manifest does not list"),
        (lambda d: (d / MANIFEST_NAME).unlink(), r"incomplete version"),
        (lambda d: (d / MANIFEST_NAME).write_text("{not json"), r"cannot read .*manifest.json"),
        (lambda d: (d / MANIFEST_NAME).write_text("[]"), r"must contain a JSON object"),
        (
            lambda d: rewrite_manifest(d, lambda m: m.update(schema="lakeguard.manifest/v0")),
            r"schema must be 'lakeguard.manifest/v1', got 'lakeguard.manifest/v0'",
        ),
        (
            lambda d: rewrite_manifest(d, lambda m: m.update(created_at="yesterday")),
            r"created_at must be an ISO-8601 time, got 'yesterday'",
        ),
        (
            lambda d: rewrite_manifest(d, lambda m: m["objects"][0].update(key="../../outside")),
            r"invalid object key '../../outside'",
        ),
        (
            lambda d: rewrite_manifest(d, lambda m: m["objects"].append(dict(m["objects"][0]))),
            r"object keys must be unique",
        ),
        (
            lambda d: rewrite_manifest(d, lambda m: m["objects"][0].update(size_bytes=-1)),
            r"size_bytes must be an integer >= 0, got -1",
        ),
        (
            lambda d: rewrite_manifest(d, lambda m: m["objects"][0].update(sha256="ABC")),
            r"sha256 must be 64 lowercase hex digits, got 'ABC'",
        ),
        (
            lambda d: rewrite_manifest(d, lambda m: m.update(version="2")),
            r"describes model 'resnet18-pneumonia' version '2', expected model 'resnet18-pneumonia' version '1'",
        ),
    ],
    ids=[
        "flipped-byte",
        "truncated",
        "object-removed",
        "extra-file",
        "extra-folder",
        "manifest-removed",
        "manifest-not-json",
        "manifest-not-object",
        "wrong-schema",
        "bad-created-at",
        "key-escapes",
        "duplicate-key",
        "negative-size",
        "bad-sha",
        "other-version",
    ],
)
def test_verify_detects_tampering(registry, sources, tamper, match):
    registry.publish(model_name=MODEL_NAME, version="1", files=sources)
    tamper(registry.root / MODEL_NAME / "1")

    with pytest.raises(RegistryError, match=match):
        registry.verify(MODEL_NAME, "1")


def test_verify_rejects_symlinked_object(registry, sources):
    registry.publish(model_name=MODEL_NAME, version="1", files=sources)
    version_dir = registry.root / MODEL_NAME / "1"
    (version_dir / "audit.json").unlink()
    (version_dir / "audit.json").symlink_to(sources["audit.json"])

    with pytest.raises(RegistryError, match="object 'audit.json' .* must be a regular file"):
        registry.verify(MODEL_NAME, "1")


def test_registry_rejects_empty_root():
    with pytest.raises(RegistryError, match="registry root must be a non-empty path"):
        LocalRegistry("")
