"""Every ``binwatch ...`` command written in README.md and docs/*.md exists, with every flag it uses.

Commands come from fenced code blocks (continuation lines joined) and from inline code spans. Each
one's subcommand path is resolved in the real command tree (``binwatch.cli.app``), ``--help`` must
run for it, and every ``--flag`` / ``-f`` it uses must be an option of that command or of a group
above it. The test fails listing every wrong line as ``file:line: command: problem``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from tests.binwatch.clitree import app, is_group, options, root, subcommands

REPO = Path(__file__).resolve().parents[2]
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

# Commands a doc may mention before they are built: (path prefix, why). Empty means every command
# the docs name exists; add an entry only with the issue that builds it.
NOT_BUILT_YET: dict[tuple[str, ...], str] = {}

# Inline code that quotes what a command prints, not a command: (text it starts with, why)
NOT_COMMANDS: dict[str, str] = {
    "binwatch console on ": "docs/console.md quotes the line `console serve` prints when it listens",
}

# tokens after which ``binwatch`` starts a command (a shell line, a pipe, sudo/env/exec/python -m)
_STARTERS = {"&&", "||", ";", "|", "&", "$", "sudo", "exec", "env", "-m", "nohup", "time", "$(", "(", "`"}
_ENDS = {"&&", "||", ";", "|", "&", ">", ">>", "2>&1", "#", "->", "→", "─▶"}  # shell, or a diagram's arrow
_PLACEHOLDER = re.compile(r"^(\.\.\.|…|[A-Z][A-Z0-9_|.\-]*|<.*>|\[.*|\(.*)$")


@dataclass(frozen=True)
class DocCommand:
    where: str  # file:line
    text: str  # the command as written
    tokens: tuple[str, ...]  # the words after ``binwatch``
    whole: bool = False  # from a code block: a whole command line (inline code may only name one)


def _starts_command(prev: str) -> bool:
    return prev in _STARTERS or prev.endswith("$(") or bool(re.match(r"^[A-Z_][A-Z0-9_]*=\S*$", prev))


def commands_in(line: str, where: str, whole: bool = False) -> Iterator[DocCommand]:
    """The ``binwatch`` commands in one (joined) shell line or inline code span."""
    words = line.replace("\\", " ").split()
    for i, w in enumerate(words):
        if w.lstrip("`$(") != "binwatch" or (i > 0 and not _starts_command(words[i - 1])):
            continue
        rest: list[str] = []
        depth = 0  # inside a synopsis' ( ... | ... ) or [ ... ], a | is not a pipe
        for t in words[i + 1 :]:
            if depth <= 0 and (t in _ENDS or t.startswith("#")):
                break
            depth += t.count("(") + t.count("[") - t.count(")") - t.count("]")
            rest.append(t.rstrip("`;"))
            if depth <= 0 and t.endswith(";"):
                break
        text = " ".join(["binwatch", *rest])
        if any(text.startswith(n) for n in NOT_COMMANDS):
            continue
        yield DocCommand(where, text, tuple(rest), whole)


def doc_commands(path: Path) -> Iterator[DocCommand]:
    """Commands in fenced code blocks (``\\`` continuations joined) and in inline code spans."""
    rel = path.relative_to(REPO).as_posix()
    fenced, pending, start = False, "", 0
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        if fenced:
            start = start if pending else n
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            yield from commands_in(pending + line, f"{rel}:{start}", whole=True)
            pending = ""
            continue
        for span in re.findall(r"`([^`]+)`", line):
            yield from commands_in(span, f"{rel}:{n}")


def _alternatives(tokens: tuple[str, ...]) -> list[tuple[str, ...]]:
    """``export onnx|quantize ...`` is two commands: expand the first token that lists alternatives."""
    for i, t in enumerate(tokens):
        if "|" in t and not t.startswith("-") and re.fullmatch(r"[a-z][a-z0-9-]*(\|[a-z][a-z0-9-]*)+", t):
            return [c for alt in t.split("|") for c in _alternatives((*tokens[:i], alt, *tokens[i + 1 :]))]
        if t.startswith("-"):
            break
    return [tokens]


def _flags(token: str) -> list[str]:
    out = []
    for part in re.split(r"[|/,]", token.strip("[](){}.,;:'\"")):
        part = part.strip("[](){}'\"").split("=")[0]
        if re.fullmatch(r"--[a-z0-9][a-z0-9-]*", part) or re.fullmatch(r"-[a-zA-Z]", part):
            out.append(part)
    return out


def _passthrough_options(cmd: Any, path: tuple[str, ...]) -> set[str]:
    """A command that hands its arguments to its own parser (``train``): the flags its help lists."""
    if not (getattr(cmd, "context_settings", None) or {}).get("ignore_unknown_options"):
        return set()
    out = CliRunner().invoke(app(), [*path, "--help"], prog_name="binwatch").output
    return set(re.findall(r"(?<![\w-])(--[a-z0-9][a-z0-9-]*|-[a-zA-Z])\b", out))


def check(tokens: tuple[str, ...], whole: bool = True) -> tuple[tuple[str, ...], list[str]]:
    """``(subcommand path, problems)`` of one command's words."""
    cmd = root()
    path: list[str] = []
    allowed = options(cmd)
    used: list[str] = []
    problems: list[str] = []
    for t in tokens:
        if t == "--":
            break  # what follows goes to another command (hpo passes it to train)
        if t.startswith("-"):
            used += _flags(t)
        elif is_group(cmd) and not used:
            sub = subcommands(cmd).get(t)
            if sub is None:
                if not _PLACEHOLDER.match(t):
                    problems.append(f"no command {' '.join(['binwatch', *path, t])!r}")
                break
            cmd, path = sub, [*path, t]
            allowed |= options(cmd) | _passthrough_options(cmd, tuple(path))
        else:
            used += _flags(t) if t.startswith(("[", "(")) else []
    name = " ".join(["binwatch", *path])
    problems += [f"{name} has no option {f}" for f in used if f not in allowed]
    if whole and path and not is_group(cmd) and not any(t in ("...", "…") or "..." in t for t in tokens):
        for p in cmd.params:
            if getattr(p, "param_type_name", "") == "option" and p.required and not set(p.opts) & set(used):
                problems.append(f"{name} needs {p.opts[0]}")
    return tuple(path), problems


def _allowed(path: tuple[str, ...]) -> bool:
    return any(path[: len(p)] == p for p in NOT_BUILT_YET)


def test_docs_name_commands() -> None:
    found = [c for doc in DOCS for c in doc_commands(doc)]
    assert len(found) > 50, "the extractor found almost no binwatch commands in the docs"
    assert any(c.text.startswith("binwatch agent run") for c in found)


def test_every_doc_command_and_flag_exists() -> None:
    wrong = []
    paths: set[tuple[str, ...]] = set()
    for doc in DOCS:
        for c in doc_commands(doc):
            for tokens in _alternatives(c.tokens):
                path, problems = check(tokens, c.whole)
                if problems and not _allowed(tuple(t for t in tokens if not t.startswith("-"))):
                    wrong.append(f"{c.where}: {c.text}: {'; '.join(problems)}")
                paths.add(path)
    runner = CliRunner()
    for path in sorted(paths):
        result = runner.invoke(app(), [*path, "--help"], prog_name="binwatch")
        if result.exit_code != 0:
            wrong.append(f"binwatch {' '.join(path)} --help: exit {result.exit_code}: {result.output[-300:]}")
    assert not wrong, "docs name commands or flags that do not exist:\n" + "\n".join(wrong)


@pytest.mark.parametrize(
    ("line", "tokens"),
    [
        ("binwatch agent run -c a.yaml  # comment --nope", ("agent", "run", "-c", "a.yaml")),
        ("sudo -u binwatch env A=1 binwatch agent check-config f.yaml", ("agent", "check-config", "f.yaml")),
        ("mosquitto -p 1883 & binwatch alerts watch &", ("alerts", "watch")),
        ("binwatch alerts watch (terminal); reviews -> train --init", ("alerts", "watch", "(terminal)")),
    ],
)
def test_extractor(line: str, tokens: tuple[str, ...]) -> None:
    assert [c.tokens for c in commands_in(line, "x:1")] == [tokens]


def test_checker_catches_wrong_flags_and_commands() -> None:
    wrong_flag = ("export", "bundle", "RUN", "--out", "b", "--nope")
    assert check(wrong_flag)[1] == ["binwatch export bundle has no option --nope"]
    assert check(("export", "nope"))[1] == ["no command 'binwatch export nope'"]
    assert check(("export", "bundle", "RUN"))[1] == ["binwatch export bundle needs --out"]
    assert check(("export", "onnx", "..."))[1] == []
    assert [t[:2] for t in _alternatives(("export", "onnx|quantize", "..."))] == [
        ("export", "onnx"),
        ("export", "quantize"),
    ]
