"""The root ``binwatch`` command.

Every subcommand group lives in its own package and is imported here. Those modules import only
typer/rich at module level; torch, onnxruntime, cv2 and friends are imported inside the command
functions, so that ``binwatch --help`` and ``binwatch agent --help`` stay light (and torch-free).
"""

from __future__ import annotations

import importlib
import logging
from typing import Optional

import typer

from binwatch import __version__

app = typer.Typer(
    name="binwatch",
    help="Count items in bin photos and flag bins whose contents do not match the manifest.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# (module, attribute, group name or None for top-level commands)
_GROUPS: list[tuple[str, str, Optional[str]]] = [
    ("contract.cli", "app", "contract"),
    ("training.data.cli", "app", "data"),
    ("training.cli", "app", None),
    ("export.cli", "app", "export"),
    ("export.cli", "predict_app", None),
    ("agent.cli", "app", "agent"),
    ("agent.cli", "alerts_app", "alerts"),
    ("deploy.cli", "app", "deploy"),
    ("binwatch.demo", "app", None),
]


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
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _register() -> None:
    for module_name, attr, group in _GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            # A group whose package is not written yet (or whose extra's typer-level imports are
            # missing) is left out rather than breaking every other command.
            if e.name and (e.name == module_name or module_name.startswith(e.name + ".")):
                continue
            raise
        sub = getattr(module, attr, None)
        if sub is None:
            continue
        if group is None:
            app.add_typer(sub)
        else:
            app.add_typer(sub, name=group)


_register()


def main() -> None:
    app()


if __name__ == "__main__":
    main()
