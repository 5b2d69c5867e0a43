"""Command-line plumbing every ``binwatch`` command group shares: the error line and exit code, the
"install the extra" error, and logging setup. Only typer, rich and the stdlib, so ``--help`` stays
light; the agent (on the device) and the operator side may import it (see docs/architecture.md)."""

from __future__ import annotations

import logging
import os
from typing import Optional, Union

import typer
from rich.console import Console
from rich.markup import escape

__all__ = ["LOG_FORMAT", "cannot_write", "err_console", "fail", "missing_extra", "setup_logging"]

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

err_console = Console(stderr=True)


def fail(message: str, code: int = 2, *, console: Optional[Console] = None) -> typer.Exit:
    """Print ``error: <message>`` on stderr (markup in the message is shown as is) and return the
    ``typer.Exit`` for the caller to raise: ``raise fail("...") from e``."""
    (console or err_console).print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code=code)


def missing_extra(e: ImportError, extra: str, code: int = 1) -> typer.Exit:
    """A command needs a package of an extra that is not installed: name it and the install line."""
    what = f"the Python package {e.name!r}" if e.name else str(e)
    return fail(f"this command needs {what}, which is not installed: pip install 'binwatch[{extra}]'", code)


def cannot_write(out: Union[str, os.PathLike[str]], e: OSError, code: int = 2) -> typer.Exit:
    """An output folder that cannot be written: the OS reason, the file when it is another one, and
    the fix (``--out``)."""
    why = e.strerror or str(e)
    where = f" ({e.filename})" if e.filename and str(e.filename) != str(out) else ""
    return fail(f"cannot write to {out}: {why}{where}; choose a folder you can write to with --out", code)


def setup_logging(
    level: Union[int, str] = logging.INFO, *, logger: Optional[str] = None, configured: bool = False
) -> None:
    """Log to stderr at ``level``. When logging is already configured (``binwatch -v`` did it, or a
    test harness), keep its handlers and only lower ``logger``'s level (``None``: the root's) so that
    this command's messages show. ``configured=True`` (a level from a config file, e.g. the agent's
    ``log_level``) also raises the root's level, unless ``-v`` chose one."""
    root = logging.getLogger()
    if isinstance(level, str):
        level = logging.getLevelName(level.upper())
        if not isinstance(level, int):
            raise ValueError(f"unknown log level {level!r}")
    if not root.handlers:
        logging.basicConfig(format=LOG_FORMAT)
        if not configured:
            root.setLevel(level)
    target = logging.getLogger(logger)
    if configured and logger is None and root.level in (logging.NOTSET, logging.WARNING):
        root.setLevel(level)
    elif target.getEffectiveLevel() > level:
        target.setLevel(level)
