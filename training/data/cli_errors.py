"""Errors of the ``binwatch data`` commands that several of them share (the error line and exit code
themselves come from :mod:`binwatch.cliutil`). Only typer, rich and the stdlib."""

from __future__ import annotations

from pathlib import Path

import typer

from binwatch.cliutil import fail
from contract.abid import AbidError

__all__ = ["cannot_write", "not_abid"]


def not_abid(e: AbidError) -> typer.Exit:
    """A folder that is not an ABID dataset: say how to make one."""
    return fail(f"{e} (make one with `binwatch data synth --out DIR` or `binwatch data download --out DIR`)")


def cannot_write(out: Path, e: OSError) -> typer.Exit:
    """An output folder that cannot be written: the OS reason, the file when it is another one."""
    why = e.strerror or str(e)
    where = f" ({e.filename})" if e.filename and str(e.filename) != str(out) else ""
    return fail(f"cannot write to {out}: {why}{where}; choose a folder you can write to with --out")
