"""Errors of the ``binwatch data`` commands that several of them share (the error line and exit code
themselves come from :mod:`binwatch.cliutil`). Only typer, rich and the stdlib."""

from __future__ import annotations

import typer

from binwatch.cliutil import fail
from contract.abid import AbidError

__all__ = ["not_abid"]


def not_abid(e: AbidError) -> typer.Exit:
    """A folder that is not an ABID dataset: say how to make one."""
    return fail(f"{e} (make one with `binwatch data synth --out DIR` or `binwatch data download --out DIR`)")
