"""Every command's ``--help`` reads well in an 80-column terminal.

For every command and group of ``binwatch`` (``COLUMNS=80``): no line is wider than 80 characters,
every option is listed under its full name, and every option with a help text shows at least the
start of it (a description squeezed to nothing, or to an ellipsis, fails). Words cut with "…" are
listed too: only the commands in ``CUT_WORDS_KNOWN`` may have them, each with why.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.binwatch.clitree import app, walk

WIDTH = 80
_BOX = re.compile(r"[│╭╮╰╯─┃━┏┓┗┛]")

# Commands whose help still cuts a word at 80 columns, and why it is not fixed by a help string.
CUT_WORDS_KNOWN: dict[tuple[str, ...], str] = {
    ("eval",): "long option names beside --no-update-card: rich narrows the name column (needs fewer "
    "or shorter options, not help text)",
}


def _help(path: tuple[str, ...]) -> str:
    env = {"COLUMNS": str(WIDTH), "TERMINAL_WIDTH": str(WIDTH), "NO_COLOR": "1"}
    result = CliRunner().invoke(app(), [*path, "--help"], prog_name="binwatch", env=env, terminal_width=WIDTH)
    assert result.exit_code == 0, (
        f"binwatch {' '.join(path)} --help: exit {result.exit_code}\n{result.output}"
    )
    return result.output


def _flat(text: str) -> str:
    """The help text without box borders, all whitespace collapsed (wrapped text joins up again)."""
    return " ".join(_BOX.sub(" ", text).split())


def _problems(path: tuple[str, ...], cmd: Any) -> list[str]:
    text = _help(path)
    name = " ".join(["binwatch", *path])
    out = [
        f"{name}: line {len(line)} wide: {line.rstrip()!r}" for line in text.splitlines() if len(line) > WIDTH
    ]
    flat = _flat(text)
    for p in cmd.params:
        if getattr(p, "param_type_name", "") != "option" or getattr(p, "hidden", False):
            continue
        long_names = [o for o in p.opts if o.startswith("--")]
        if long_names and not any(re.search(rf"(?<![\w-]){re.escape(o)}(?![\w-])", flat) for o in long_names):
            out.append(f"{name}: option {long_names[0]} is not shown in full")
        words = (p.help or "").split()
        if words and words[0].rstrip(".,:;") not in flat:
            out.append(f"{name}: the description of {p.opts[0]} is cut to nothing")
    return out


COMMANDS = list(walk())


@pytest.mark.parametrize(("path", "cmd"), COMMANDS, ids=[" ".join(p) or "binwatch" for p, _ in COMMANDS])
def test_help_fits_80_columns(path: tuple[str, ...], cmd: Any) -> None:
    problems = _problems(path, cmd)
    if path in CUT_WORDS_KNOWN:
        problems = [p for p in problems if "not shown in full" not in p]
    assert not problems, "\n".join(problems)


def test_no_cut_words_beyond_the_known() -> None:
    cut = {path for path, _ in COMMANDS if "…" in _help(path)}
    assert not cut - set(CUT_WORDS_KNOWN), (
        f"--help cuts words (…) at 80 columns: {sorted(cut - set(CUT_WORDS_KNOWN))}"
    )
