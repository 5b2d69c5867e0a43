"""The ``binwatch`` command tree (typer's command objects), for the docs and help tests.

Typer ships its own copy of click (``typer._click``), so commands are told apart by what they
have (``commands``: a group), not by ``isinstance`` against the ``click`` package.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from typing import Any, Optional

import typer
import typer.main


def app() -> typer.Typer:
    from binwatch.cli import app

    return app


@lru_cache(maxsize=1)
def root() -> Any:
    return typer.main.get_command(app())


def subcommands(cmd: Any) -> dict[str, Any]:
    """A group's commands by name; ``{}`` for a plain command."""
    return dict(getattr(cmd, "commands", None) or {})


def is_group(cmd: Any) -> bool:
    return hasattr(cmd, "commands")


def walk(cmd: Optional[Any] = None, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command and group, depth first, with its path (``()`` is the root)."""
    cmd = root() if cmd is None else cmd
    yield path, cmd
    for name, sub in sorted(subcommands(cmd).items()):
        yield from walk(sub, (*path, name))


def options(cmd: Any) -> set[str]:
    """Every option name a command accepts (``--flag``, ``--no-flag``, ``-f``), ``--help`` included."""
    names = {"--help"}
    for p in cmd.params:
        if getattr(p, "param_type_name", "") == "option":
            names.update(p.opts)
            names.update(p.secondary_opts)
    return names
