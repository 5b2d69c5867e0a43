"""Bundle signatures (contract.signing) with real ed25519 keys on a real tiny bundle: the round
trip, and each way a bundle or a key is refused, with the reason in the message."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from contract import ContractError, ModelDesired
from contract.bundle import MANIFEST_NAME, SIGNATURE_NAME, build_manifest, load_manifest, write_manifest
from contract.signing import (
    BundleError,
    KeyFileError,
    SignatureError,
    generate_keypair,
    key_id,
    load_private_key,
    load_public_key,
    sign_bundle,
    signature_of,
    verify_bundle,
    verify_signature,
)
from tests.agent.bundles import make_tiny_bundle


def _keypair(folder: Path, name: str) -> tuple[Path, Path]:
    private_pem, public_pem = generate_keypair()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.key").write_bytes(private_pem)
    (folder / f"{name}.pub").write_bytes(public_pem)
    return folder / f"{name}.key", folder / f"{name}.pub"


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return _keypair(tmp_path / "keys", "release")


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return make_tiny_bundle(tmp_path / "bundle")


@pytest.fixture()
def signed(bundle: Path, keys: tuple[Path, Path]) -> Path:
    sign_bundle(bundle, load_private_key(keys[0]))
    return bundle


def test_keys_round_trip_and_key_id(keys: tuple[Path, Path]) -> None:
    private, public = load_private_key(keys[0]), load_public_key(keys[1])
    assert isinstance(private, Ed25519PrivateKey) and isinstance(public, Ed25519PublicKey)
    assert keys[0].read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    kid = key_id(public)
    assert len(kid) == 16 and int(kid, 16) >= 0
    assert key_id(private) == kid
    assert key_id(load_public_key(_keypair(keys[0].parent, "other")[1])) != kid


def test_sign_and_verify_round_trip(bundle: Path, keys: tuple[Path, Path]) -> None:
    signature = sign_bundle(bundle, load_private_key(keys[0]))
    assert (bundle / SIGNATURE_NAME).read_bytes() == signature.encode("ascii")
    assert signature_of(bundle) == signature
    assert len(base64.b64decode(signature)) == 64
    desired = ModelDesired(version=1, bundle_url="file:///b.tar", sha256="0" * 64, signature=signature)
    assert desired.signature == signature  # the string the fleet message carries
    kid = key_id(load_public_key(keys[1]))
    assert verify_signature(bundle, [load_public_key(keys[1])]) == kid
    assert verify_bundle(bundle, [keys[1]]) == kid  # a trust list of key files works too
    # The manifest is unchanged by signing, and MANIFEST.sig is never listed in it.
    assert SIGNATURE_NAME not in load_manifest(bundle).files


def test_signature_from_the_message_and_key_rotation(bundle: Path, keys: tuple[Path, Path]) -> None:
    signature = sign_bundle(bundle, keys[0])  # a key file path works for signing too
    (bundle / SIGNATURE_NAME).unlink()
    _old_key, old_pub = _keypair(keys[0].parent, "old")
    trust = [load_public_key(old_pub), load_public_key(keys[1])]
    assert verify_bundle(bundle, trust, signature=signature) == key_id(trust[1])
    assert verify_signature(bundle, trust, signature) == key_id(trust[1])
    with pytest.raises(SignatureError, match=r"unsigned bundle \(no MANIFEST\.sig"):
        verify_signature(bundle, trust)


def test_one_changed_byte_of_a_model_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    model = signed / "model.fp32.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    # The signature covers MANIFEST.json only, which still verifies; the file's hash does not.
    assert verify_signature(signed, [keys[1]]) == key_id(load_public_key(keys[1]))
    with pytest.raises(BundleError) as err:
        verify_bundle(signed, [keys[1]])
    assert not isinstance(err.value, SignatureError)
    assert err.value.problems == ["model.fp32.onnx: sha256 differs from MANIFEST.json (the file was changed)"]


def test_manifest_edited_after_signing_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    # Someone swaps the model and writes a fresh, well-formed manifest for it.
    (signed / "model.fp32.onnx").write_bytes(b"not the signed model")
    write_manifest(signed, build_manifest(signed, model_name="tiny-count", model_version=1))
    kid = key_id(load_public_key(keys[1]))
    with pytest.raises(SignatureError) as err:
        verify_bundle(signed, [keys[1]])
    assert err.value.problems == [
        f"not signed by any key in the trust list (1 key(s): {kid}); "
        "MANIFEST.json was changed after signing, or it was signed with another key"
    ]
    with pytest.raises(SignatureError, match=r"not signed by any key in the trust list \(1 key\(s\)"):
        verify_signature(signed, [keys[1]])


def test_a_key_not_in_the_trust_list_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    others = [load_public_key(_keypair(keys[0].parent, n)[1]) for n in ("a", "b")]
    ids = ", ".join(key_id(k) for k in others)
    with pytest.raises(SignatureError, match=rf"\(2 key\(s\): {ids}\)"):
        verify_bundle(signed, others)
    with pytest.raises(SignatureError, match="the trust list is empty"):
        verify_signature(signed, [])


def test_unsigned_and_malformed_signatures(bundle: Path, keys: tuple[Path, Path]) -> None:
    trust = [load_public_key(keys[1])]
    assert signature_of(bundle) is None
    with pytest.raises(SignatureError, match=r"unsigned bundle \(no MANIFEST\.sig"):
        verify_bundle(bundle, trust)
    for content, why in [
        (b"not base64 at all!", "malformed signature: not valid base64"),
        (base64.b64encode(b"short"), "malformed signature: decodes to 5 bytes; an ed25519 signature has 64"),
        (b"\xff\xfe" * 44, "MANIFEST.sig: malformed signature: not ASCII base64"),
        (b"A" * 5000, "MANIFEST.sig: malformed signature: the file is too long"),
    ]:
        (bundle / SIGNATURE_NAME).write_bytes(content)
        with pytest.raises(SignatureError) as err:
            verify_bundle(bundle, trust)
        assert err.value.problems == [why]
    # A signature string from a message is checked the same way.
    with pytest.raises(SignatureError, match="malformed signature"):
        verify_signature(bundle, trust, signature="@@@")


def test_bad_key_files_are_named(tmp_path: Path, keys: tuple[Path, Path]) -> None:
    corrupt = tmp_path / "corrupt.pub"
    pem = keys[1].read_text().splitlines()
    corrupt.write_text("\n".join([pem[0], pem[1][:30], pem[2]]) + "\n")
    ec_key = ec.generate_private_key(ec.SECP256R1())
    ec_pub = tmp_path / "ec.pub"
    ec_pub.write_bytes(
        ec_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    encrypted = tmp_path / "locked.key"
    encrypted.write_bytes(
        load_private_key(keys[0]).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    cases = [
        (load_public_key, corrupt, "not a PEM public key"),
        (load_public_key, tmp_path / "missing.pub", "public key file not found"),
        (load_public_key, ec_pub, "holds a EC public key; bundles are signed with ed25519"),
        (load_public_key, keys[0], "holds a private key"),
        (load_private_key, keys[1], "holds a public key"),
        (load_private_key, encrypted, "cannot load the private key"),
        (load_private_key, ec_pub.with_name("garbage.key"), "private key file not found"),
    ]
    for loader, path, why in cases:
        with pytest.raises(KeyFileError) as err:
            loader(path)
        assert str(err.value).startswith(f"{path}: ") and why in str(err.value), str(err.value)
    assert isinstance(load_private_key(encrypted, password=b"secret"), Ed25519PrivateKey)
    with pytest.raises(KeyFileError, match=r"corrupt\.pub: not a PEM public key"):
        verify_bundle(keys[0].parent, [keys[1], corrupt])
    with pytest.raises(TypeError, match="list of keys"):
        verify_bundle(keys[0].parent, keys[1])  # type: ignore[arg-type]


def test_signing_refuses_a_bundle_that_differs_from_its_manifest(
    bundle: Path, keys: tuple[Path, Path]
) -> None:
    (bundle / "extra.txt").write_text("slipped in")
    with pytest.raises(BundleError) as err:
        sign_bundle(bundle, keys[0])
    assert err.value.problems == ["extra.txt: unexpected file (not in MANIFEST.json)"]
    assert not (bundle / SIGNATURE_NAME).exists()
    (bundle / "extra.txt").unlink()
    pretty = json.dumps(json.loads((bundle / MANIFEST_NAME).read_bytes()), indent=2)
    (bundle / MANIFEST_NAME).write_text(pretty)
    with pytest.raises(BundleError, match="not in canonical form"):
        sign_bundle(bundle, keys[0])
    (bundle / MANIFEST_NAME).unlink()
    with pytest.raises(BundleError, match=r"no MANIFEST\.json"):
        sign_bundle(bundle, keys[0])
    with pytest.raises(BundleError, match="not a directory"):
        verify_bundle(bundle / "card.json", [keys[1]])
    assert issubclass(BundleError, ContractError) and issubclass(SignatureError, BundleError)
