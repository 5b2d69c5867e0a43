"""The root ``binwatch`` command.

Every subcommand group lives in its own package and is imported here. Those modules import only
typer/rich at module level; torch, onnxruntime, cv2 and friends are imported inside the command
functions, so that ``binwatch --help`` and ``binwatch agent --help`` stay light (and torch-free).
Every module in :data:`_GROUPS` must exist (tests/binwatch/test_cli.py checks it); one that cannot be
imported because an extra is not installed still lists its commands, which say what to install.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from typing import Union

import typer

from binwatch import __version__
from binwatch.cliutil import fail, setup_logging

log = logging.getLogger(__name__)

app = typer.Typer(
    name="binwatch",
    help="Count items in bin photos and flag bins whose contents do not match the manifest.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module, attribute, group name, or for top-level command apps the names of their commands)
_GROUPS: list[tuple[str, str, Union[str, tuple[str, ...]]]] = [
    ("contract.cli", "app", "contract"),
    ("training.data.cli", "app", "data"),
    ("training.cli", "app", ("train", "eval", "hpo", "baseline")),
    ("export.cli", "app", "export"),
    ("export.cli", "predict_app", ("predict",)),
    ("agent.cli", "app", "agent"),
    ("console.cli", "app", "alerts"),
    ("console.console_cli", "app", "console"),
    ("deploy.cli", "app", "deploy"),
    ("demo.cli", "app", ("demo",)),
]

# The extra that installs what a package's commands need (pyproject.toml).
_EXTRAS = {
    "training": "train",
    "export": "export",
    "agent": "agent",
    "console": "console",
    "deploy": "deploy",
    "demo": "all",
    "binwatch": "all",
}
_OURS = ("binwatch", "contract", "training", "export", "agent", "console", "deploy", "demo")


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"binwatch {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Print the version and exit."
    ),
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More logging (-v info, -vv debug)."),
) -> None:
    setup_logging(logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG)


def _unavailable(missing: str, extra: str) -> Callable[..., None]:
    """A stand-in for commands whose module cannot be imported because a package is missing."""

    def command(ctx: typer.Context) -> None:
        raise fail(
            f"`binwatch {ctx.info_name}` needs the Python package {missing!r}, which is not "
            f"installed; install it with: pip install 'binwatch[{extra}]'",
            2,
        )

    return command


def _missing_extra(module_name: str) -> str:
    """Import ``module_name``; return ``""``, or the name of the third-party package it lacks (an
    extra not installed). A module that does not exist, or a missing module of ours, raises."""
    try:
        importlib.import_module(module_name)
    except ModuleNotFoundError as e:
        missing = e.name or ""
        if missing == module_name or module_name.startswith(missing + "."):
            raise ModuleNotFoundError(
                f"the command module {module_name!r} does not exist: register only modules that "
                "exist (binwatch/cli.py, _GROUPS)",
                name=module_name,
            ) from e
        if missing.split(".")[0] in _OURS:
            raise
        log.debug("%s unavailable: %s", module_name, e)
        return missing
    return ""


def _register(root: typer.Typer, groups: list[tuple[str, str, Union[str, tuple[str, ...]]]]) -> None:
    """Add each group (or top-level command app) to ``root``.

    A module that cannot be imported because a third-party package is missing (an extra not
    installed) still shows its commands; running one says which extra to install. A module that
    does not exist, one without the named attribute, and any other import error are bugs: they
    raise.
    """
    for module_name, attr, where in groups:
        missing = _missing_extra(module_name)
        if missing:
            extra = _EXTRAS.get(module_name.split(".")[0], "all")
            for name in (where,) if isinstance(where, str) else where:
                root.command(
                    name,
                    help=f"(Not installed: needs pip install 'binwatch[{extra}]'.)",
                    add_help_option=False,
                    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                )(_unavailable(missing, extra))
            continue
        sub = getattr(importlib.import_module(module_name), attr, None)
        if not isinstance(sub, typer.Typer):
            raise AttributeError(f"the command module {module_name!r} has no typer app {attr!r}")
        if isinstance(where, str):
            root.add_typer(sub, name=where)
        else:
            root.add_typer(sub)


_register(app, _GROUPS)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
