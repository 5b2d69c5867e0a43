"""``binwatch deploy``: signing keys, signing and verifying model bundles, and pushing them to the
fleet (serve, push, status, rollback: :mod:`deploy.fleet_cli`, :mod:`deploy.push_cli`); see
docs/deploy.md.

Only typer, rich and the stdlib at module level; ``cryptography`` (through ``contract.signing``),
paho, starlette and uvicorn are imported inside the commands, so ``binwatch deploy --help`` stays
light.
"""

from __future__ import annotations

import tarfile
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import typer

from binwatch.cliutil import cannot_write, fail, missing_extra
from deploy.fleet_cli import rollback_cmd, serve_cmd, status_cmd
from deploy.push_cli import push_cmd

app = typer.Typer(
    help="Ship models to the fleet: signing keys, signing and verifying bundles, serving and "
    "pushing them to devices in stages, fleet status and rollback.",
    no_args_is_help=True,
)

_FOLDER_HINT = (
    "make the bundle as a folder (binwatch export bundle RUN --out DIR), sign the folder "
    "(binwatch deploy sign DIR --key KEY), then tar it (tar -C DIR -cf BUNDLE.tar .)"
)


@contextmanager
def _needs_cryptography() -> Iterator[None]:
    try:
        yield
    except ImportError as e:
        if (e.name or "").split(".")[0] != "cryptography":
            raise
        raise missing_extra(e, "deploy") from e


def _print_problems(problems: list[str]) -> None:
    for p in problems:
        typer.echo(f"  {p}", err=True)


@app.command("keygen")
def keygen_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder for NAME.key and NAME.pub (created)."),
    name: str = typer.Option("binwatch", "--name", help="File name stem of the key pair."),
    force: bool = typer.Option(False, "--force", help="Replace an existing key pair of that name."),
) -> None:
    """Make an ed25519 signing key pair (NAME.key, NAME.pub) and print its key id.

    NAME.key is the private key (PKCS8 PEM, mode 0600): keep it secret. NAME.pub is the public key
    (PEM): it goes into the devices' trust list and to binwatch deploy verify --pub.
    """
    from contract.files import write_atomic

    if not name or "/" in name or name.startswith("."):
        raise fail(f"--name {name!r}: give a plain file name stem such as 'release-2025'", 2)
    private_path, public_path = out / f"{name}.key", out / f"{name}.pub"
    existing = [str(p) for p in (private_path, public_path) if p.exists()]
    if existing and not force:
        verb = "exists" if len(existing) == 1 else "exist"
        raise fail(f"{' and '.join(existing)} already {verb}: refusing to overwrite a key (--force)", 2)
    with _needs_cryptography():
        from contract.signing import generate_keypair, key_id, load_public_key

        private_pem, public_pem = generate_keypair()
        try:
            write_atomic(private_path, private_pem, mode=0o600)
            write_atomic(public_path, public_pem, mode=0o644)
        except OSError as e:
            raise cannot_write(out, e) from e
        kid = key_id(load_public_key(public_path))
    typer.echo(f"wrote {private_path} (private: keep it secret) and {public_path} (public)")
    typer.echo(f"key id {kid}")


@app.command("sign")
def sign_cmd(
    bundle: Path = typer.Argument(..., help="Bundle folder (with MANIFEST.json), not a .tar."),
    key: Path = typer.Option(..., "--key", "-k", help="Private key file (NAME.key from deploy keygen)."),
) -> None:
    """Sign a bundle folder: write MANIFEST.sig and print the key id.

    Every file is first checked against MANIFEST.json: a bundle whose files differ from it is refused.
    MANIFEST.sig is the ed25519 signature over MANIFEST.json (which lists the sha256 of every file).
    """
    if bundle.is_file():
        raise fail(f"{bundle} is a file: signing needs the bundle folder; {_FOLDER_HINT}", 2)
    if not bundle.is_dir():
        raise fail(f"{bundle}: no such bundle folder", 2)
    with _needs_cryptography():
        from contract.bundle import SIGNATURE_NAME
        from contract.signing import BundleError, KeyFileError, key_id, load_private_key, sign_bundle

        try:
            private_key = load_private_key(key)
        except KeyFileError as e:
            raise fail(str(e), 2) from e
        try:
            sign_bundle(bundle, private_key)
        except BundleError as e:
            _print_problems(e.problems)
            raise fail(
                f"refusing to sign {bundle}: it does not match its MANIFEST.json "
                f"({len(e.problems)} problem(s) above); rebuild it with binwatch export bundle",
                1,
            ) from e
        except OSError as e:
            raise cannot_write(bundle, e) from e
        typer.echo(f"signed {bundle / SIGNATURE_NAME} with key {key_id(private_key)}")


@contextmanager
def _bundle_folder(bundle: Path) -> Iterator[Path]:
    """The bundle folder itself, or a safe extraction of a tar into a temporary folder."""
    from contract.files import UnsafeArchiveError, safe_extract_tar

    if bundle.is_dir():
        yield bundle
        return
    if not bundle.is_file():
        raise fail(f"{bundle}: no such bundle (a folder or a .tar)", 2)
    if not tarfile.is_tarfile(bundle):
        raise fail(f"{bundle}: not a bundle (neither a folder nor a tar archive)", 2)
    with tempfile.TemporaryDirectory(prefix="binwatch-verify-") as tmp:
        try:
            safe_extract_tar(bundle, tmp)
        except UnsafeArchiveError as e:
            raise fail(f"refused: {e}", 1) from e
        yield Path(tmp)


@app.command("verify")
def verify_cmd(
    bundle: Path = typer.Argument(..., help="Bundle folder or .tar."),
    pub: list[Path] = typer.Option(
        ...,
        "--pub",
        "-p",
        help="Trusted public key (NAME.pub); repeat for several (key rotation): any one may have signed.",
    ),
) -> None:
    """Check a bundle's signature and every file; exit 1 with the reasons when refused.

    The signature in MANIFEST.sig must verify with one of the trusted public keys, and the size and
    sha256 of every file must match MANIFEST.json. Exit 0 with "ok: signed by <key id>", else exit 1
    with each problem on its own line.
    """
    with _needs_cryptography():
        from contract.signing import BundleError, KeyFileError, key_id, load_public_key, verify_bundle

        trusted, files = [], {}
        for path in pub:
            try:
                k = load_public_key(path)
            except KeyFileError as e:
                raise fail(str(e), 2) from e
            trusted.append(k)
            files.setdefault(key_id(k), path)
        with _bundle_folder(bundle) as folder:
            try:
                signer = verify_bundle(folder, trusted)
            except BundleError as e:
                _print_problems(e.problems)
                raise fail(f"{bundle}: refused ({len(e.problems)} problem(s) above)", 1) from e
    typer.echo(f"ok: signed by {signer} ({files[signer]}); every file matches MANIFEST.json")


app.command("serve")(serve_cmd)
app.command("push")(push_cmd)
app.command("status")(status_cmd)
app.command("rollback")(rollback_cmd)
