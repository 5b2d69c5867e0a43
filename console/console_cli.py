"""``binwatch console``: the operator's web console (docs/console.md).

- ``serve``: follow the broker (alerts, snapshots, device state) into the store and serve the pages;
- ``user add NAME``: a login (argon2-hashed password), prompted for or read from a file;
- ``export --out DIR``: reviewed snapshots as an ABID-layout training set.

Only typer and the stdlib at module level; the store, the web app and paho are imported inside the
commands, so ``binwatch --help`` stays light.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

import typer

from binwatch.cliutil import fail, missing_extra, setup_logging

log = logging.getLogger(__name__)

app = typer.Typer(
    name="console",
    help="The web console: review mismatch alerts, watch the fleet, export reviewed snapshots.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
user_app = typer.Typer(
    name="user",
    help="Console logins.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(user_app, name="user")

ConfigOpt = typer.Option(None, "--config", "-c", help="console config file (YAML; docs/console.md)")
DbOpt = typer.Option(
    None, "--db", help="database URL (default sqlite in the data folder); env BINWATCH_CONSOLE_DB"
)
ImagesOpt = typer.Option(
    None, "--images", help="snapshot folder or s3://bucket/prefix (default: in the data folder)"
)
DataDirOpt = typer.Option(
    None,
    "--data-dir",
    help="folder for the database, snapshots and session key; env BINWATCH_CONSOLE_DATA_DIR",
)


def _config(config: Optional[Path], overrides: dict[str, Any]) -> Any:
    from console.config import ConfigError, load_config

    try:
        return load_config(config, _prune(overrides))
    except ConfigError as e:
        raise fail(f"{e} (fix the config file or the option)", 2) from e


def _prune(d: dict[str, Any]) -> dict[str, Any]:
    """Drop the options that were not given (None), and sections left empty."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        if isinstance(value, dict):
            value = _prune(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def _open_store(cfg: Any) -> Any:
    try:
        from console.web.server import open_store
    except ImportError as e:
        raise missing_extra(e, "console") from e
    try:
        return open_store(cfg.db_url, cfg.images)
    except Exception as e:  # the database driver's own errors: name the URL and the fix
        raise fail(
            f"cannot open the console database {_redact(cfg.db_url)}: {e} "
            "(check --db / store.db, or --data-dir is writable)",
            1,
        ) from e


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<the configured URL>"


@app.command("serve")
def serve(
    config: Optional[Path] = ConfigOpt,
    broker: Optional[str] = typer.Option(None, "--broker", help="mqtt://host:port or mqtts://host:port"),
    site: Optional[list[str]] = typer.Option(None, "--site", help="a site to follow (repeat; default: all)"),
    db: Optional[str] = DbOpt,
    images: Optional[str] = ImagesOpt,
    host: Optional[str] = typer.Option(None, "--host", help="address to serve on (default 127.0.0.1)"),
    port: Optional[int] = typer.Option(None, "--port", min=0, max=65535, help="TCP port (default 8080)"),
    data_dir: Optional[Path] = DataDirOpt,
    username: Optional[str] = typer.Option(
        None,
        "--mqtt-username",
        help="MQTT user; its password from mqtt.password_file or the environment (docs/console.md)",
    ),
) -> None:
    """Serve the web console and follow the broker into its store.

    Alerts, their snapshots and each device's status, stats and model reports are stored as they come.

    Reviews are published on <prefix>/<site>/<device>/alert/review.

    Log in with a user made by `binwatch console user add`. Docs: docs/console.md.
    """
    setup_logging(logging.INFO, logger="console")
    overrides = {
        "data_dir": data_dir,
        "sites": site or None,
        "mqtt": {"broker": broker, "username": username},
        "web": {"host": host, "port": port},
        "store": {"db": db, "images": images},
    }
    cfg = _config(config, overrides)
    try:
        from console.web.server import ListenError, Stopped, bind, load_secret, run
    except ImportError as e:
        raise missing_extra(e, "console") from e
    try:
        sock = bind(cfg.web.host, cfg.web.port)
    except ListenError as e:
        raise fail(str(e), 1) from e
    where = f"{cfg.web.host}:{sock.getsockname()[1]}"
    if cfg.web.host not in ("127.0.0.1", "::1", "localhost"):
        typer.echo(f"warning: serving on {cfg.web.host}: the console is reachable from the network", err=True)

    def ready() -> None:
        typer.echo(
            f"binwatch console on http://{where}/ (broker {cfg.mqtt.broker}); Ctrl-C stops it", err=True
        )

    try:
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        secret = load_secret(cfg.secret_file)
    except (OSError, ValueError) as e:
        sock.close()
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise fail(f"cannot use the data folder {cfg.data_dir}: {why}; choose one with --data-dir", 1) from e
    try:
        store = _open_store(cfg)
    except typer.Exit:
        sock.close()
        raise
    try:
        run(cfg, sock, store, secret, on_ready=ready)
    except Stopped:
        typer.echo("binwatch console stopped", err=True)
    except (OSError, ValueError, RuntimeError) as e:
        raise fail(f"the console stopped: {e}", 1) from e
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


@user_app.command("add")
def user_add(
    name: str = typer.Argument(..., help="login name (also the reviewer name on published reviews)"),
    password_file: Optional[Path] = typer.Option(
        None, "--password-file", help="read the password from this file (first line); default: prompt"
    ),
    role: str = typer.Option("reviewer", "--role", help="reviewer (may review) or viewer (read only)"),
    config: Optional[Path] = ConfigOpt,
    db: Optional[str] = DbOpt,
    data_dir: Optional[Path] = DataDirOpt,
) -> None:
    """Add a login to the console's database (the password is stored as an argon2 hash)."""
    from console.web.auth import ROLES, hash_password

    if role not in ROLES:
        raise fail(f"--role {role!r}: use one of {', '.join(ROLES)}", 2)
    if not name.strip() or len(name) > 128 or any(c.isspace() for c in name):
        raise fail(f"user name {name!r}: 1-128 characters without spaces", 2)
    password = _read_password(password_file)
    cfg = _config(config, {"data_dir": data_dir, "store": {"db": db}})
    store = _open_store(cfg)
    try:
        store.add_user(name, hash_password(password), role=role)
    except ValueError as e:
        raise fail(f"{e}; choose another name", 1) from e
    finally:
        store.close()
    typer.echo(f"added {role} {name!r} to {_redact(cfg.db_url)}")


@user_app.command("passwd")
def user_passwd(
    name: str = typer.Argument(..., help="login name"),
    password_file: Optional[Path] = typer.Option(
        None, "--password-file", help="read the new password from this file (first line); default: prompt"
    ),
    config: Optional[Path] = ConfigOpt,
    db: Optional[str] = DbOpt,
    data_dir: Optional[Path] = DataDirOpt,
) -> None:
    """Set a new password for a login (sessions signed before stay valid until they expire)."""
    from console.web.auth import hash_password

    password = _read_password(password_file)
    cfg = _config(config, {"data_dir": data_dir, "store": {"db": db}})
    store = _open_store(cfg)
    try:
        store.set_password(name, hash_password(password))
    except KeyError as e:
        raise fail(
            f"{e.args[0]}: list logins in the database, or add it with `binwatch console user add`", 1
        ) from e
    finally:
        store.close()
    typer.echo(f"new password set for {name!r}")


@user_app.command("remove")
def user_remove(
    name: str = typer.Argument(..., help="login name"),
    config: Optional[Path] = ConfigOpt,
    db: Optional[str] = DbOpt,
    data_dir: Optional[Path] = DataDirOpt,
) -> None:
    """Remove a login (the reviews it made keep its name)."""
    cfg = _config(config, {"data_dir": data_dir, "store": {"db": db}})
    store = _open_store(cfg)
    try:
        store.remove_user(name)
    except KeyError as e:
        raise fail(f"{e.args[0]}: nothing removed", 1) from e
    finally:
        store.close()
    typer.echo(f"removed {name!r}")


def _read_password(password_file: Optional[Path]) -> str:
    if password_file is not None:
        try:
            lines = password_file.read_text(encoding="utf-8").splitlines()
        except OSError as e:
            raise fail(f"cannot read --password-file {password_file}: {e.strerror or e}", 2) from e
        password = lines[0] if lines else ""
        if not password:
            raise fail(f"--password-file {password_file} is empty: put the password on its first line", 2)
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise fail("the password is shorter than 8 characters: choose a longer one", 2)
    return password


@app.command("export")
def export(
    out: Path = typer.Option(..., "--out", "-o", help="folder to write the ABID-layout training set to"),
    config: Optional[Path] = ConfigOpt,
    db: Optional[str] = DbOpt,
    images: Optional[str] = ImagesOpt,
    data_dir: Optional[Path] = DataDirOpt,
) -> None:
    """Export reviewed snapshots as an ABID-layout training set.

    Confirmed mismatches are labelled with the actual count, false alarms with the expected one.

    Then fine-tune: binwatch train --data DIR --init RUN_DIR ...
    """
    cfg = _config(config, {"data_dir": data_dir, "store": {"db": db, "images": images}})
    try:
        from console.export import export_reviews
    except ImportError as e:
        raise missing_extra(e, "console") from e
    store = _open_store(cfg)
    typer.echo(f"exporting reviewed snapshots from {_redact(cfg.db_url)} to {out} ...", err=True)
    try:
        summary = export_reviews(store, out)
    except OSError as e:
        raise fail(
            f"cannot write to {out}: {e.strerror or e}; choose a folder you can write to with --out", 2
        ) from e
    finally:
        store.close()
    typer.echo(_summary_text(summary, out))


def _summary_text(summary: Any, out: Path) -> str:
    """``ExportSummary`` -> the lines the command prints."""
    counts = ", ".join(f"{qty}: {n}" for qty, n in sorted(summary.histogram.items())) or "none"
    lines = [
        f"{summary.items} reviewed snapshot(s) in {out} ({summary.written} written, "
        f"{summary.removed} removed by this run)",
        f"items per count: {counts}",
    ]
    if summary.missing:
        lines.append(
            f"warning: {summary.missing} reviewed alert(s) left out: their JPEG is gone from the image store"
        )
    if summary.items:
        lines.append(f"next: binwatch train --data {out} --init RUN_DIR ...  (fine-tune a run on them)")
    return "\n".join(lines)
