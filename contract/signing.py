"""Bundle signatures (``MANIFEST.sig``): ed25519 over the bundle manifest's canonical bytes.

``MANIFEST.json`` is written as exactly :meth:`contract.bundle.BundleManifest.canonical_bytes`
(:func:`contract.bundle.write_manifest`), so the signature covers the file as it lies on disk, and the
manifest in turn holds the sha256 of every other file. ``MANIFEST.sig`` holds the signature as
standard base64 (88 ASCII characters, no newline): the same string ``ModelDesired.signature`` carries.

Keys are PEM files: the private key PKCS8 (unencrypted, or with a password given in code), the
public key SubjectPublicKeyInfo (what ``binwatch deploy keygen`` writes). A key is named in messages
by :func:`key_id`. Rotation is a trust list with several public keys: a bundle passes when any one
of them verifies its signature.

The agent (on the device), ``deploy`` and ``export`` share this module. ``cryptography`` is imported
inside the functions (the only place in ``contract`` that may import it), so ``import contract``
stays light; without it the functions raise ``ModuleNotFoundError`` (name ``cryptography``).
See docs/deploy.md ("Signing bundles") and docs/contract.md.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Union

from contract.base import ContractError
from contract.bundle import MANIFEST_NAME, SIGNATURE_NAME, BundleManifest, verify_manifest
from contract.files import write_atomic

if TYPE_CHECKING:  # pragma: no cover
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "SIGNATURE_BYTES",
    "BundleError",
    "KeyFileError",
    "SignatureError",
    "decode_signature",
    "generate_keypair",
    "key_id",
    "load_private_key",
    "load_public_key",
    "sign_bundle",
    "signature_of",
    "verify_bundle",
    "verify_signature",
]

SIGNATURE_BYTES = 64  # an ed25519 signature
_MAX_SIG_FILE = 1024  # MANIFEST.sig holds 88 characters; anything much longer is not a signature

PathLike = Union[str, "os.PathLike[str]"]
PublicKeyLike = Union["Ed25519PublicKey", PathLike]
PrivateKeyLike = Union["Ed25519PrivateKey", PathLike]


class KeyFileError(ContractError):
    """A key file that cannot be used: unreadable, not PEM, encrypted, or not an ed25519 key."""


class BundleError(ContractError):
    """A bundle refused; :attr:`problems` lists each reason (a file, the manifest, the signature)."""

    def __init__(self, where: object, problems: Iterable[str]) -> None:
        self.where = str(where)
        self.problems = list(problems)
        super().__init__(f"{self.where}: " + "; ".join(self.problems))


class SignatureError(BundleError):
    """The signature does not stand: unsigned bundle, malformed signature, or no trusted key
    verifies it (the message says which, and names the trusted keys by id)."""


# -- keys ------------------------------------------------------------------------------------------
def generate_keypair() -> tuple[bytes, bytes]:
    """A new ed25519 key pair as ``(private PKCS8 PEM, public PEM)``; the private key unencrypted."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return private_pem, public_pem


def _read_key_file(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError as e:
        raise KeyFileError(f"{path}: {what} key file not found") from e
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read the {what} key ({e.strerror or e})") from e


def _kind(key: object) -> str:
    return type(key).__name__.removesuffix("PrivateKey").removesuffix("PublicKey") or "unknown"


def load_private_key(path: PathLike, *, password: Optional[bytes] = None) -> Ed25519PrivateKey:
    """Read an ed25519 private key (PEM, PKCS8). :class:`KeyFileError` naming the file when it is
    missing, not a PEM private key, encrypted (and no ``password``), or another kind of key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    p = Path(path)
    data = _read_key_file(p, "private")
    if b"PUBLIC KEY-----" in data and b"PRIVATE KEY-----" not in data:
        raise KeyFileError(f"{p}: holds a public key; signing needs the private key (NAME.key)")
    try:
        key = serialization.load_pem_private_key(data, password=password)
    except TypeError as e:  # encrypted without a password, or a password for a plain key
        raise KeyFileError(f"{p}: cannot load the private key ({e})") from e
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(
            f"{p}: not a PEM private key (corrupt or another format; make one with binwatch deploy keygen)"
        ) from e
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyFileError(f"{p}: holds a {_kind(key)} private key; bundles are signed with ed25519")
    return key


def load_public_key(path: PathLike) -> Ed25519PublicKey:
    """Read an ed25519 public key (PEM). :class:`KeyFileError` naming the file when it is missing,
    not a PEM public key, a private key, or another kind of key."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    p = Path(path)
    data = _read_key_file(p, "public")
    if b"PRIVATE KEY-----" in data:
        raise KeyFileError(f"{p}: holds a private key; give the public key (NAME.pub), keep this one secret")
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as e:
        raise KeyFileError(
            f"{p}: not a PEM public key (corrupt or another format; binwatch deploy keygen writes NAME.pub)"
        ) from e
    if not isinstance(key, Ed25519PublicKey):
        raise KeyFileError(f"{p}: holds a {_kind(key)} public key; bundles are signed with ed25519")
    return key


def key_id(key: Union[Ed25519PublicKey, Ed25519PrivateKey]) -> str:
    """16 hex digits of the sha256 of the raw 32-byte public key (a private key: its public half)."""
    from cryptography.hazmat.primitives import serialization

    public = key.public_key() if hasattr(key, "public_key") else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def _public_keys(trusted_keys: Iterable[PublicKeyLike]) -> list[Ed25519PublicKey]:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    if isinstance(trusted_keys, (str, bytes, os.PathLike, Ed25519PublicKey)):
        raise TypeError("trusted_keys is a list of keys or key files (one key: [key])")
    keys = []
    for k in trusted_keys:
        if isinstance(k, Ed25519PublicKey):
            keys.append(k)
        elif isinstance(k, (str, os.PathLike)):
            keys.append(load_public_key(k))
        else:
            raise TypeError(
                f"a trusted key is an Ed25519PublicKey or a PEM file path, not {type(k).__name__}"
            )
    return keys


def _private_key(key: PrivateKeyLike) -> Ed25519PrivateKey:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    if isinstance(key, Ed25519PrivateKey):
        return key
    if isinstance(key, (str, os.PathLike)):
        return load_private_key(key)
    raise TypeError(f"the signing key is an Ed25519PrivateKey or a PEM file path, not {type(key).__name__}")


# -- signatures ------------------------------------------------------------------------------------
def decode_signature(text: str) -> bytes:
    """The 64 bytes of a base64 signature; ValueError saying why it is malformed."""
    try:
        raw = base64.b64decode(text.strip().encode("ascii"), validate=True)
    except (binascii.Error, ValueError, UnicodeError) as e:
        raise ValueError("malformed signature: not valid base64") from e
    if len(raw) != SIGNATURE_BYTES:
        raise ValueError(f"malformed signature: decodes to {len(raw)} bytes; an ed25519 signature has 64")
    return raw


def signature_of(bundle_dir: PathLike) -> Optional[str]:
    """The text of the bundle's ``MANIFEST.sig`` (surrounding whitespace removed), or None when the
    bundle has none. Not checked here (:func:`verify_signature` does); a file that cannot be a
    signature (binary, far too long) raises :class:`SignatureError`."""
    p = Path(bundle_dir) / SIGNATURE_NAME
    try:
        with open(p, "rb") as f:
            data = f.read(_MAX_SIG_FILE + 1)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise SignatureError(bundle_dir, [f"{SIGNATURE_NAME}: cannot read ({e.strerror or e})"]) from e
    if len(data) > _MAX_SIG_FILE:
        raise SignatureError(bundle_dir, [f"{SIGNATURE_NAME}: malformed signature: the file is too long"])
    try:
        return data.decode("ascii").strip()
    except UnicodeDecodeError as e:
        raise SignatureError(bundle_dir, [f"{SIGNATURE_NAME}: malformed signature: not ASCII base64"]) from e


def _manifest_bytes(root: Path) -> bytes:
    try:
        return (root / MANIFEST_NAME).read_bytes()
    except FileNotFoundError as e:
        what = "not a directory" if not root.is_dir() else f"no {MANIFEST_NAME} (not a bundle)"
        raise SignatureError(root, [what]) from e
    except OSError as e:
        raise SignatureError(root, [f"{MANIFEST_NAME}: cannot read ({e.strerror or e})"]) from e


def sign_bundle(bundle_dir: PathLike, private_key: PrivateKeyLike, *, check_files: bool = True) -> str:
    """Sign the bundle folder's ``MANIFEST.json`` and write ``MANIFEST.sig`` atomically; returns the
    base64 signature. Refused (:class:`BundleError` listing why) when the manifest is missing,
    invalid or not in canonical form, or (``check_files``) when a file differs from it."""
    root = Path(bundle_dir)
    key = _private_key(private_key)
    if not root.is_dir():
        raise BundleError(root, ["not a directory (signing needs the bundle folder)"])
    try:
        raw = _manifest_bytes(root)
    except SignatureError as e:
        raise BundleError(root, e.problems) from e
    try:
        manifest = BundleManifest.parse(raw)
    except ContractError as e:
        raise BundleError(root, [f"{MANIFEST_NAME}: {e}"]) from e
    if raw != manifest.canonical_bytes():
        raise BundleError(
            root,
            [f"{MANIFEST_NAME}: not in canonical form (write it with contract.bundle.write_manifest)"],
        )
    if check_files:
        problems = verify_manifest(root, manifest)
        if problems:
            raise BundleError(root, problems)
    signature = base64.b64encode(key.sign(raw)).decode("ascii")
    write_atomic(root / SIGNATURE_NAME, signature, mode=0o644)
    return signature


def _check(raw: bytes, signature: Optional[str], keys: list[Ed25519PublicKey]) -> str:
    """The id of the first key that verifies ``signature`` over ``raw``; ValueError with the reason."""
    from cryptography.exceptions import InvalidSignature

    if not keys:
        raise ValueError("no trusted public keys (the trust list is empty), so no signature can be accepted")
    if signature is None:
        raise ValueError(f"unsigned bundle (no {SIGNATURE_NAME}; sign it with binwatch deploy sign)")
    sig = decode_signature(signature)
    for key in keys:
        try:
            key.verify(sig, raw)
        except InvalidSignature:
            continue
        return key_id(key)
    ids = list(dict.fromkeys(key_id(k) for k in keys))
    raise ValueError(
        f"not signed by any key in the trust list ({len(ids)} key(s): {', '.join(ids)}); "
        f"{MANIFEST_NAME} was changed after signing, or it was signed with another key"
    )


def verify_signature(
    bundle_dir: PathLike, trusted_keys: Iterable[PublicKeyLike], signature: Optional[str] = None
) -> str:
    """Check the signature (``signature``, e.g. ``ModelDesired.signature``, else the bundle's
    ``MANIFEST.sig``) over ``MANIFEST.json``'s bytes as they lie on disk. Returns the id
    (:func:`key_id`) of the trusted key that verifies it, else raises :class:`SignatureError`: unsigned
    bundle, malformed signature, or not signed by any key in the trust list. ``trusted_keys``:
    ``Ed25519PublicKey`` objects or PEM file paths (:class:`KeyFileError` for a bad file). The files'
    hashes are not checked here: :func:`verify_bundle` does both."""
    root = Path(bundle_dir)
    keys = _public_keys(trusted_keys)
    raw = _manifest_bytes(root)
    sig = signature if signature is not None else signature_of(root)
    try:
        return _check(raw, sig, keys)
    except ValueError as e:
        raise SignatureError(root, [str(e)]) from e


def verify_bundle(
    bundle_dir: PathLike, trusted_keys: Iterable[PublicKeyLike], *, signature: Optional[str] = None
) -> str:
    """Check a bundle folder completely: the signature over ``MANIFEST.json`` (as
    :func:`verify_signature`) and the size and sha256 of every file against that same manifest
    (:func:`contract.bundle.verify_manifest`). Returns the id of the trusted key that signed it.

    Raises :class:`SignatureError` when the signature fails, else :class:`BundleError` when a file
    differs (missing, changed, unexpected) or the manifest is invalid; either lists every problem
    in ``problems``. MANIFEST.json is read once, so the files are checked against the signed bytes.
    """
    root = Path(bundle_dir)
    keys = _public_keys(trusted_keys)
    if not root.is_dir():
        raise BundleError(root, ["not a directory (a bundle is a folder, or a tar to extract first)"])
    raw = _manifest_bytes(root)
    problems: list[str] = []
    signer: Optional[str] = None
    try:
        signer = _check(raw, signature if signature is not None else signature_of(root), keys)
    except SignatureError as e:
        problems.extend(e.problems)
    except ValueError as e:
        problems.append(str(e))
    try:
        problems.extend(verify_manifest(root, BundleManifest.parse(raw)))
    except ContractError as e:
        problems.append(f"{MANIFEST_NAME}: {e}")
    if signer is None:
        raise SignatureError(root, problems)
    if problems:
        raise BundleError(root, problems)
    return signer
