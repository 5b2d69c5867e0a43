"""Bundle manifest: hashes every file, and verify names each changed, missing or extra file."""

from __future__ import annotations

import hashlib
import json
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from contract import ContractError
from contract.bundle import (
    MANIFEST_NAME,
    SIGNATURE_NAME,
    BundleManifest,
    build_manifest,
    load_manifest,
    sha256_file,
    verify_manifest,
    write_manifest,
)


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    root = tmp_path / "bundle"
    (root / "golden").mkdir(parents=True)
    (root / "card.json").write_text('{"name": "m"}')
    (root / "model.fp32.onnx").write_bytes(bytes(range(256)) * 50)
    (root / "golden" / "0001.jpg").write_bytes(b"\xff\xd8jpeg")
    (root / "golden" / "expected.json").write_text("{}")
    (root / "empty.txt").write_bytes(b"")
    manifest = build_manifest(root, model_name="bins-r18", model_version=3)
    write_manifest(root, manifest)
    (root / SIGNATURE_NAME).write_bytes(b"sig")  # never listed
    return root


def test_build_lists_every_file_sorted_with_posix_paths(bundle: Path) -> None:
    manifest = load_manifest(bundle)
    assert list(manifest.files) == [
        "card.json",
        "empty.txt",
        "golden/0001.jpg",
        "golden/expected.json",
        "model.fp32.onnx",
    ]
    onnx = bundle / "model.fp32.onnx"
    entry = manifest.files["model.fp32.onnx"]
    assert entry.sha256 == hashlib.sha256(onnx.read_bytes()).hexdigest() == sha256_file(onnx)
    assert entry.size == 12800
    assert manifest.files["empty.txt"].sha256 == hashlib.sha256(b"").hexdigest()
    assert (manifest.model_name, manifest.model_version) == ("bins-r18", 3)


def test_untouched_bundle_verifies(bundle: Path) -> None:
    assert verify_manifest(bundle) == []


def test_changed_byte_is_named(bundle: Path) -> None:
    onnx = bundle / "model.fp32.onnx"
    data = bytearray(onnx.read_bytes())
    data[1234] ^= 0x01  # same size, one bit
    onnx.write_bytes(bytes(data))
    assert verify_manifest(bundle) == [
        f"model.fp32.onnx: sha256 differs from {MANIFEST_NAME} (the file was changed)"
    ]


def test_size_change_is_named(bundle: Path) -> None:
    with open(bundle / "golden" / "0001.jpg", "ab") as f:
        f.write(b"x")
    (problem,) = verify_manifest(bundle)
    assert problem.startswith("golden/0001.jpg: size is 7 bytes")


def test_missing_file_is_named(bundle: Path) -> None:
    (bundle / "card.json").unlink()
    assert verify_manifest(bundle) == [f"card.json: missing (listed in {MANIFEST_NAME})"]


def test_extra_files_are_named(bundle: Path) -> None:
    (bundle / "evil.so").write_bytes(b"x")
    (bundle / "golden" / "more.jpg").write_bytes(b"y")
    assert verify_manifest(bundle) == [
        f"evil.so: unexpected file (not in {MANIFEST_NAME})",
        f"golden/more.jpg: unexpected file (not in {MANIFEST_NAME})",
    ]


def test_symlinks_are_refused(bundle: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside.onnx"
    outside.write_bytes((bundle / "model.fp32.onnx").read_bytes())
    (bundle / "model.fp32.onnx").unlink()
    os.symlink(outside, bundle / "model.fp32.onnx")
    assert verify_manifest(bundle) == ["model.fp32.onnx: is a symbolic link (bundles hold plain files only)"]
    with pytest.raises(ContractError, match=r"model\.fp32\.onnx: is a symbolic link"):
        build_manifest(bundle, model_name="m", model_version=1)


def test_several_problems_are_all_reported(bundle: Path) -> None:
    (bundle / "card.json").write_text('{"name": "x"}')
    (bundle / "empty.txt").unlink()
    (bundle / "new.bin").write_bytes(b"1")
    problems = verify_manifest(bundle)
    assert [p.split(":")[0] for p in problems] == ["card.json", "empty.txt", "new.bin"]


def test_missing_or_broken_manifest(bundle: Path) -> None:
    (bundle / MANIFEST_NAME).write_text('{"schema": "binwatch.bundle_manifest", "files": {}}')
    (problem,) = verify_manifest(bundle)
    assert problem.startswith(f"{MANIFEST_NAME}:") and "model_name" in problem
    (bundle / MANIFEST_NAME).unlink()
    (problem,) = verify_manifest(bundle)
    assert problem.startswith(f"{MANIFEST_NAME}:") and "missing" in problem
    assert verify_manifest(bundle / "nope") == [f"{bundle / 'nope'}: not a directory"]


def test_manifest_file_is_exactly_the_canonical_bytes(bundle: Path) -> None:
    raw = (bundle / MANIFEST_NAME).read_bytes()
    manifest = BundleManifest.parse(raw)
    assert manifest.canonical_bytes() == raw
    assert raw == json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()


def test_canonical_bytes_do_not_depend_on_the_time_zone() -> None:
    t = datetime(2024, 5, 1, 12, 0, 0, 5, tzinfo=timezone.utc)
    files = {"a": {"sha256": "a" * 64, "size": 1}}
    utc = BundleManifest(created=t, model_name="m", model_version=1, files=files)
    plus2 = BundleManifest(
        created=t.astimezone(timezone(timedelta(hours=2))), model_name="m", model_version=1, files=files
    )
    assert utc.canonical_bytes() == plus2.canonical_bytes()
    assert b'"created":"2024-05-01T12:00:00.000005Z"' in utc.canonical_bytes()
    assert BundleManifest.parse(utc.canonical_bytes()).canonical_bytes() == utc.canonical_bytes()


def test_ed25519_signature_over_canonical_bytes_survives_a_round_trip(bundle: Path) -> None:
    ed25519 = pytest.importorskip("cryptography.hazmat.primitives.asymmetric.ed25519")
    from cryptography.exceptions import InvalidSignature

    key = ed25519.Ed25519PrivateKey.generate()
    signature = key.sign(load_manifest(bundle).canonical_bytes())
    # the verifier re-reads the manifest from disk and checks the same bytes
    key.public_key().verify(signature, load_manifest(bundle).canonical_bytes())
    raw = (bundle / MANIFEST_NAME).read_bytes().replace(b'"size":0', b'"size":1')
    tampered = BundleManifest.parse(raw)
    with pytest.raises(InvalidSignature):
        key.public_key().verify(signature, tampered.canonical_bytes())


@pytest.mark.parametrize(
    "path",
    ["../card.json", "/etc/passwd", "a\\b", "a//b", "./a", "a/../b", MANIFEST_NAME, SIGNATURE_NAME, ""],
)
def test_manifest_paths_are_relative_and_plain(path: str) -> None:
    with pytest.raises(ContractError, match="files"):
        BundleManifest.parse(
            {"model_name": "m", "model_version": 1, "files": {path: {"sha256": "a" * 64, "size": 1}}}
        )


def test_build_refuses_a_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(ContractError, match="not a directory"):
        build_manifest(tmp_path / "none", model_name="m", model_version=1)
