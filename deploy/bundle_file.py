"""The bundle a push ships: what the desired state says about it (card version, sha256 of the
file, ``MANIFEST.sig``), and putting it where the devices fetch it."""

from __future__ import annotations

import logging
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Optional
from urllib.parse import unquote, urlsplit

from deploy.plan import InputError

log = logging.getLogger(__name__)

__all__ = ["BundleInfo", "bundle_url", "read_bundle"]


@dataclass(frozen=True)
class BundleInfo:
    path: Path
    name: str
    version: int
    sha256: str
    signature: str

    @property
    def served_name(self) -> str:
        """The file name under the publish folder: model name, version and the start of the sha256
        (a rebuilt bundle of the same version never overwrites the one devices are fetching)."""
        return f"{self.name}-v{self.version}-{self.sha256[:12]}.tar"


def read_bundle(path: Path) -> BundleInfo:
    """Read a bundle ``.tar``: its card (name, version), ``MANIFEST.sig`` and sha256. Every problem
    is an :class:`InputError` that says what to do."""
    from contract.base import ContractError
    from contract.bundle import verify_manifest
    from contract.card import load_card
    from contract.files import UnsafeArchiveError, safe_extract_tar, sha256_file
    from contract.signing import SignatureError, signature_of

    if path.is_dir():
        raise InputError(f"{path} is a folder: push a bundle .tar (tar -C {path} -cf BUNDLE.tar .)")
    if not path.is_file():
        raise InputError(f"{path}: no such bundle file")
    if not tarfile.is_tarfile(path):
        raise InputError(f"{path}: not a tar archive (push the .tar of a signed bundle)")
    with tempfile.TemporaryDirectory(prefix="binwatch-push-") as tmp:
        try:
            safe_extract_tar(path, tmp)
            card = load_card(Path(tmp))
            signature = signature_of(tmp)
        except (UnsafeArchiveError, ContractError, SignatureError) as e:
            raise InputError(f"{path}: {e}") from e
        if signature is None:
            raise InputError(
                f"{path}: unsigned bundle (no MANIFEST.sig): sign the folder with binwatch deploy sign"
            )
        problems = verify_manifest(tmp)
        if problems:
            raise InputError(f"{path}: the files differ from MANIFEST.json: {'; '.join(problems[:5])}")
    sha256 = sha256_file(path)
    return BundleInfo(path=path, name=card.name, version=card.version, sha256=sha256, signature=signature)


def bundle_url(
    info: BundleInfo, *, publish_dir: Optional[Path], url_base: Optional[str], url: Optional[str]
) -> str:
    """Where devices fetch the bundle: ``url`` as given (a local one is checked against the sha256),
    or a copy under ``publish_dir`` (not replaced when the same bytes are there) named under
    ``url_base`` (or by its absolute path when no base is given: devices that share the folder)."""
    if url is not None:
        if publish_dir is not None or url_base is not None:
            raise InputError(
                "--bundle-url is the bundle's final address: leave out --publish-dir and --url-base"
            )
        _check_local(url, info)
        return url
    if publish_dir is None:
        if url_base is not None:
            raise InputError("--url-base needs --publish-dir (the folder that binwatch deploy serve serves)")
        raise InputError(
            "say where devices fetch the bundle: --publish-dir DIR --url-base http://HOST:8088 "
            "(with binwatch deploy serve DIR), or --bundle-url URL"
        )
    if url_base is not None and urlsplit(url_base).scheme not in ("http", "https"):
        raise InputError(f"--url-base {url_base!r} must be an http:// or https:// URL")
    target = _publish(info, publish_dir)
    if url_base is None:
        return str(target.resolve())
    return f"{url_base.rstrip('/')}/{info.served_name}"


def _publish(info: BundleInfo, publish_dir: Path) -> Path:
    from contract.files import atomic_path, sha256_file

    target = publish_dir / info.served_name
    if target.is_file() and sha256_file(target) == info.sha256:
        log.info("%s is already published", target)
        return target
    try:
        with atomic_path(target) as tmp:
            shutil.copyfile(info.path, tmp)
            tmp.chmod(0o644)
    except OSError as e:
        raise InputError(f"cannot copy the bundle to {publish_dir}: {e.strerror or e}") from e
    log.info("published %s", target)
    return target


def _check_local(url: str, info: BundleInfo) -> None:
    """A path or ``file://`` URL must hold this very bundle (else every device would refuse it)."""
    from contract.files import sha256_file

    parts = urlsplit(url)
    if parts.scheme in ("http", "https"):
        return
    if parts.scheme not in ("", "file"):
        raise InputError(f"--bundle-url {url!r}: use a path, file:// or http(s):// URL")
    local = Path(unquote(parts.path) if parts.scheme == "file" else url)
    if not local.is_file():
        log.warning("--bundle-url %s is not a file here: devices must have it at that path", url)
        return
    if sha256_file(local) != info.sha256:
        raise InputError(f"--bundle-url {url!r} holds another file than {info.path} (sha256 differs)")
