"""``binwatch deploy keygen|sign|verify`` through the real command, with real keys and a real tiny
bundle (folder and .tar): exit codes, what is printed, and each refusal's reason."""

from __future__ import annotations

import base64
import re
import stat
import tarfile
from pathlib import Path

import pytest
from click.testing import Result
from typer.testing import CliRunner

from binwatch.cli import app
from contract.bundle import SIGNATURE_NAME
from contract.signing import key_id, load_public_key
from tests.agent.bundles import make_tiny_bundle

runner = CliRunner()


def _run(*args: str | Path, code: int = 0) -> Result:
    result = runner.invoke(app, ["deploy", *map(str, args)])
    assert result.exit_code == code, (args, result.output)
    return result


def _keygen(out: Path, name: str) -> tuple[Path, Path]:
    _run("keygen", "--out", out, "--name", name)
    return out / f"{name}.key", out / f"{name}.pub"


def _tar(folder: Path, out: Path) -> Path:
    with tarfile.open(out, "w") as tar:
        for p in sorted(folder.rglob("*")):
            tar.add(p, arcname=p.relative_to(folder).as_posix(), recursive=False)
    return out


@pytest.fixture()
def keys(tmp_path: Path) -> tuple[Path, Path]:
    return _keygen(tmp_path / "keys", "release")


@pytest.fixture()
def bundle(tmp_path: Path) -> Path:
    return make_tiny_bundle(tmp_path / "bundle")


@pytest.fixture()
def signed(bundle: Path, keys: tuple[Path, Path]) -> Path:
    _run("sign", bundle, "--key", keys[0])
    return bundle


def test_every_command_has_help() -> None:
    listing = _run("--help").stdout
    for name in ("keygen", "sign", "verify"):
        assert name in listing
        assert "Usage:" in _run(name, "--help").stdout


def test_keygen_writes_a_private_key_only_its_owner_reads(tmp_path: Path) -> None:
    out = tmp_path / "keys"
    result = _run("keygen", "--out", out, "--name", "rel")
    private, public = out / "rel.key", out / "rel.pub"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert private.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert public.read_bytes().startswith(b"-----BEGIN PUBLIC KEY-----")
    assert f"key id {key_id(load_public_key(public))}" in result.stdout
    before = private.read_bytes()
    refused = _run("keygen", "--out", out, "--name", "rel", code=2)
    assert "refusing to overwrite a key (--force)" in refused.stderr
    assert private.read_bytes() == before
    _run("keygen", "--out", out, "--name", "rel", "--force")
    assert private.read_bytes() != before and stat.S_IMODE(private.stat().st_mode) == 0o600


def test_sign_then_verify_folder_and_tar(tmp_path: Path, bundle: Path, keys: tuple[Path, Path]) -> None:
    kid = key_id(load_public_key(keys[1]))
    signed = _run("sign", bundle, "--key", keys[0])
    assert f"with key {kid}" in signed.stdout
    assert len(base64.b64decode((bundle / SIGNATURE_NAME).read_text(), validate=True)) == 64
    ok = _run("verify", bundle, "--pub", keys[1])
    assert ok.stdout.startswith(f"ok: signed by {kid}")
    tar = _tar(bundle, tmp_path / "bundle.tar")
    assert _run("verify", tar, "--pub", keys[1]).stdout.startswith(f"ok: signed by {kid}")
    # Key rotation: several trusted keys, any one of them signed.
    _old_key, old_pub = _keygen(tmp_path / "keys", "old")
    assert f"ok: signed by {kid}" in _run("verify", tar, "-p", old_pub, "-p", keys[1]).stdout


def test_a_tar_cannot_be_signed(tmp_path: Path, bundle: Path, keys: tuple[Path, Path]) -> None:
    tar = _tar(bundle, tmp_path / "bundle.tar")
    err = _run("sign", tar, "--key", keys[0], code=2).stderr
    assert "signing needs the bundle folder" in err and "binwatch export bundle" in err


def test_changed_byte_in_a_model_is_refused(tmp_path: Path, signed: Path, keys: tuple[Path, Path]) -> None:
    model = signed / "model.fp32.onnx"
    data = bytearray(model.read_bytes())
    data[-1] ^= 0xFF
    model.write_bytes(bytes(data))
    err = _run("verify", signed, "--pub", keys[1], code=1).stderr
    assert "model.fp32.onnx: sha256 differs from MANIFEST.json (the file was changed)" in err
    assert "refused (1 problem(s)" in err
    tar_err = _run("verify", _tar(signed, tmp_path / "b.tar"), "--pub", keys[1], code=1).stderr
    assert "model.fp32.onnx: sha256 differs" in tar_err
    # Nor will it be signed again as it is.
    err = _run("sign", signed, "--key", keys[0], code=1).stderr
    assert "refusing to sign" in err and "model.fp32.onnx: sha256 differs" in err


def test_manifest_edited_after_signing_is_refused(signed: Path, keys: tuple[Path, Path]) -> None:
    manifest = signed / "MANIFEST.json"
    manifest.write_bytes(manifest.read_bytes().replace(b'"model_version":1', b'"model_version":2'))
    err = _run("verify", signed, "--pub", keys[1], code=1).stderr
    kid = key_id(load_public_key(keys[1]))
    assert f"not signed by any key in the trust list (1 key(s): {kid})" in err


def test_signature_by_an_untrusted_key_is_refused(tmp_path: Path, signed: Path) -> None:
    _other_key, other_pub = _keygen(tmp_path / "other", "stranger")
    err = _run("verify", signed, "--pub", other_pub, code=1).stderr
    assert re.search(r"not signed by any key in the trust list \(1 key\(s\): [0-9a-f]{16}\)", err)


def test_unsigned_and_corrupt_signatures_are_refused(bundle: Path, keys: tuple[Path, Path]) -> None:
    err = _run("verify", bundle, "--pub", keys[1], code=1).stderr
    assert "unsigned bundle (no MANIFEST.sig" in err
    (bundle / SIGNATURE_NAME).write_text("this is not a signature")
    err = _run("verify", bundle, "--pub", keys[1], code=1).stderr
    assert "malformed signature: not valid base64" in err


def test_bad_key_files_are_named(tmp_path: Path, signed: Path, keys: tuple[Path, Path]) -> None:
    corrupt = tmp_path / "corrupt.pub"
    corrupt.write_bytes(keys[1].read_bytes()[:40])
    err = _run("verify", signed, "--pub", corrupt, code=2).stderr
    assert f"{corrupt}: not a PEM public key" in err
    err = _run("verify", signed, "--pub", keys[0], code=2).stderr
    assert "holds a private key" in err
    err = _run("sign", signed, "--key", keys[1], code=2).stderr
    assert f"{keys[1]}: holds a public key" in err
    err = _run("verify", tmp_path / "nowhere", "--pub", keys[1], code=2).stderr
    assert "no such bundle" in err
