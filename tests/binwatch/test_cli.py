"""The root ``binwatch`` command: version, the registered command modules, and how it degrades when
a part cannot be imported."""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from binwatch import __version__
from binwatch.cli import _GROUPS, _register, app

runner = CliRunner()


def test_version_and_console_script() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == f"binwatch {__version__}"
    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("binwatch") == "binwatch.cli:main"


@pytest.fixture()
def fake_parts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    # A command module whose extra is not installed, and one with a bug (an own module it lacks).
    (tmp_path / "bwfake_extra_cli.py").write_text(
        "import bw_no_such_package\nimport typer\napp = typer.Typer()\n"
    )
    (tmp_path / "bwfake_buggy_cli.py").write_text("import contract.no_such_module\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("bwfake_extra_cli", "bwfake_buggy_cli"):
        sys.modules.pop(name, None)


def _root() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _main() -> None:
        """root"""

    return root


def test_missing_extra_leaves_commands_that_say_what_to_install(fake_parts: Path) -> None:
    root = _root()
    _register(
        root,
        [
            ("bwfake_extra_cli", "app", "agent"),
            ("bwfake_extra_cli", "app", ("train", "eval")),
        ],
    )
    listing = runner.invoke(root, ["--help"])
    assert listing.exit_code == 0, listing.output
    for name in ("agent", "train", "eval"):
        assert name in listing.stdout
    for argv in (["agent", "run", "--model", "x"], ["agent", "--help"], ["eval", "RUN"]):
        result = runner.invoke(root, argv)
        assert result.exit_code == 2, (argv, result.output)
        assert "bw_no_such_package" in result.stderr and "pip install 'binwatch[" in result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit)


def test_a_broken_own_import_is_not_hidden(fake_parts: Path) -> None:
    with pytest.raises(ModuleNotFoundError, match=r"contract\.no_such_module"):
        _register(_root(), [("bwfake_buggy_cli", "app", "agent")])


@pytest.mark.parametrize(("module", "attr", "where"), _GROUPS, ids=[f"{m}:{a}" for m, a, _ in _GROUPS])
def test_every_registered_module_exists_and_has_its_app(module: str, attr: str, where: object) -> None:
    assert importlib.util.find_spec(module) is not None, f"{module} is registered but does not exist"
    assert isinstance(getattr(importlib.import_module(module), attr, None), typer.Typer), (module, attr)


@pytest.mark.parametrize("module", ["bwfake_not_written.cli", "binwatch.no_such_cli"])
def test_a_module_that_does_not_exist_is_an_error(module: str) -> None:
    with pytest.raises(ModuleNotFoundError, match=rf"command module '{module}' does not exist"):
        _register(_root(), [(module, "app", "deploy")])


def test_a_module_without_its_app_is_an_error(fake_parts: Path) -> None:
    (fake_parts / "bwfake_no_app_cli.py").write_text("import typer\nother = typer.Typer()\n")
    try:
        with pytest.raises(AttributeError, match=r"'bwfake_no_app_cli' has no typer app 'app'"):
            _register(_root(), [("bwfake_no_app_cli", "app", "agent")])
    finally:
        sys.modules.pop("bwfake_no_app_cli", None)
