"""``binwatch deploy serve|status|rollback`` (docs/deploy.md, "Pushing a model to the fleet").
``deploy/cli.py`` registers these commands; ``push`` is in :mod:`deploy.push_cli`.

Only typer, rich and the stdlib at module level."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer
from rich.console import Console

from binwatch.cliutil import fail, missing_extra
from deploy.cli_common import Broker, Ca, Cert, Key, Password, Prefix, Username, Wait, broker_config, connect

log = logging.getLogger(__name__)

__all__ = ["rollback_cmd", "serve_cmd", "status_cmd"]


def serve_cmd(
    folder: Path = typer.Argument(..., help="Folder of bundle files: only files under it are served."),
    listen: str = typer.Option("127.0.0.1:8088", "--listen", help="HOST:PORT to listen on."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No access log lines."),
) -> None:
    """Serve bundle files over HTTP for the devices of a small site (GET and HEAD, Range).

    Devices resume interrupted downloads with Range requests (206). Only regular files under
    FOLDER are served: no folder listings, no hidden files, nothing outside FOLDER.
    """
    from deploy.serve import parse_listen

    if not folder.is_dir():
        raise fail(f"{folder}: no such folder (give the folder that holds the bundle files)", 2)
    try:
        host, port = parse_listen(listen)
    except ValueError as e:
        raise fail(str(e), 2) from e
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise missing_extra(e, "deploy") from e
    from deploy.serve import serve

    typer.echo(f"serving {folder.resolve()} on http://{host}:{port}/ (Ctrl-C stops)")
    serve(folder.resolve(), host, port, access_log=not quiet)


def status_cmd(
    site: str = typer.Option(..., "--site", help="Site id."),
    broker: Broker = None,
    prefix: Prefix = None,
    as_json: bool = typer.Option(False, "--json", help="Print the rows as a JSON list."),
    wait: Wait = 1.0,
    username: Username = None,
    password: Password = None,
    ca: Ca = None,
    cert: Cert = None,
    key: Key = None,
) -> None:
    """The devices of a site from their retained messages: online state, model, update state.

    Subscribes to <prefix>/<site>/+/status, +/model/reported and +/model/desired, collects the
    retained messages for --wait seconds, and prints one row per device.
    """
    from deploy.cli_common import check_site
    from deploy.view import status_rows, status_table

    cfg = broker_config(broker, prefix, username, password, ca, cert, key)
    check_site(site, cfg.prefix)
    link = connect(cfg, site, wait)
    try:
        rows = status_rows(link)
    finally:
        link.stop()
    if as_json:
        typer.echo(json.dumps(rows, indent=2))
        return
    out = Console(highlight=False, soft_wrap=True)
    out.print(status_table(rows, site))
    if not rows:
        out.print(f"no device of site {site} has a retained message on {cfg.broker}")


def rollback_cmd(
    state_file: Path = typer.Argument(..., help="The rollout's state file (written by push)."),
    broker: Broker = None,
    prefix: Prefix = None,
    wait: Wait = 1.0,
    username: Username = None,
    password: Password = None,
    ca: Ca = None,
    cert: Cert = None,
    key: Key = None,
) -> None:
    """Roll back what a rollout moved: every device it published to gets its previous desired
    state again (cleared where it had none: the agent then keeps its running model)."""
    from deploy.fleet import LinkError
    from deploy.plan import InputError
    from deploy.rollout import Rollout
    from deploy.state import load_state
    from deploy.view import PushView

    try:
        state = load_state(state_file)
    except InputError as e:
        raise fail(str(e), 2) from e
    todo = [d for d in state.moved() if not state.devices[d].rolled_back]
    if not todo:
        what = "was already rolled back" if state.moved() else "moved no device"
        typer.echo(f"nothing to roll back: rollout {state.rollout_id} {what}")
        return
    cfg = broker_config(broker or state.broker, prefix or state.prefix, username, password, ca, cert, key)
    link = connect(cfg, state.site, wait)
    out = Console(highlight=False, soft_wrap=True)
    try:
        with PushView(state, link, out) as view:
            done = Rollout(state, state_file, link, view).rollback(
                state.halt_reason or "rolled back by binwatch deploy rollback"
            )
    except LinkError as e:
        raise fail(f"{e}; the state file records what was rolled back: run this command again", 1) from e
    finally:
        link.stop()
    out.print(f"rolled back {len(done)} device(s) of rollout {state.rollout_id}: {', '.join(done)}")
