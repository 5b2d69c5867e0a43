"""``binwatch data synth`` then ``binwatch data stats``, run as a new user runs them (the installed
command, in a fresh folder), and the errors a user meets: each names the cause and the fix, exits
non-zero and prints no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from typer.testing import CliRunner

from binwatch.cli import app

runner = CliRunner()


def _binwatch(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    script = Path(sys.executable).with_name("binwatch")
    argv = [str(script)] if script.is_file() else [sys.executable, "-m", "binwatch"]
    return subprocess.run([*argv, *args], cwd=cwd, capture_output=True, text=True, check=False)


def test_synth_then_stats_as_a_new_user(tmp_path: Path) -> None:
    made = _binwatch(
        "data", "synth", "--out", "bins", "--count", "12", "--max-items", "3", "--seed", "1",
        "--size", "128x96", "--workers", "1", cwd=tmp_path,
    )  # fmt: skip
    assert made.returncode == 0, made.stderr
    assert "Wrote 12 bins" in made.stderr and "Traceback" not in made.stderr
    record = json.loads((tmp_path / "bins" / "synth.json").read_text())

    table = _binwatch("data", "stats", "bins", cwd=tmp_path)
    assert table.returncode == 0, table.stderr
    assert "Count histogram" in table.stdout and "128 .. 128" in table.stdout

    as_json = _binwatch("data", "stats", "bins", "--json", cwd=tmp_path)
    assert as_json.returncode == 0, as_json.stderr
    stats = json.loads(as_json.stdout)
    assert stats["images"] == 12 and stats["skipped"] == {}
    assert stats["histogram"] == record["counts"]  # what synth says it drew is what stats reads
    assert set(map(int, stats["histogram"])) <= {0, 1, 2, 3}
    assert (stats["width"]["min"], stats["width"]["max"]) == (128, 128)
    assert (stats["height"]["min"], stats["height"]["max"]) == (96, 96)


@pytest.fixture()
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "plain.txt"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize(
    ("argv", "cause", "fix"),
    [
        (["data", "stats", "{tmp}/nowhere"], "no such folder", "binwatch data synth --out DIR"),
        (["data", "stats", "{file}"], "not a folder", "binwatch data synth --out DIR"),
        (["data", "stats", "{tmp}/[red]x"], "/[red]x: not an ABID folder", "--out DIR"),  # not markup
        (["data", "synth", "--out", "{file}/bins", "--count", "2"], "Not a directory", "with --out"),
        (["data", "synth", "--out", "{tmp}/s", "--count", "0"], "--count", "greater than or equal to"),
        (["data", "synth", "--out", "{tmp}/s", "--count", "two"], "--count", "integer"),
        (["data", "download", "--out", "{file}/abid", "--limit", "1"], "Not a directory", "with --out"),
        (["contract", "schema", "--out", "{file}/schemas"], "Not a directory", "with --out"),
    ],
)
def test_bad_input_names_cause_and_fix(
    tmp_path: Path, a_file: Path, argv: list[str], cause: str, fix: str
) -> None:
    argv = [a.format(tmp=tmp_path, file=a_file) for a in argv]
    result = runner.invoke(app, argv)
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    message = " ".join(result.stderr.split())  # rich wraps long lines
    assert cause in message and fix in message, message
    assert not (tmp_path / "s").exists()


def test_synth_after_synth_asks_for_overwrite(tmp_path: Path) -> None:
    argv = ["data", "synth", "--out", str(tmp_path), "--count", "1", "--size", "64x64", "--workers", "1"]
    assert runner.invoke(app, argv).exit_code == 0
    again = runner.invoke(app, argv)
    assert again.exit_code == 2
    assert "already holds a dataset" in again.stderr and "--overwrite" in again.stderr


@pytest.mark.parametrize(
    ("argv", "package"),
    [(["data", "synth", "--out", "s", "--count", "1"], "numpy"), (["data", "stats", "."], "PIL")],
)
def test_missing_training_extra_is_named(tmp_path: Path, argv: list[str], package: str) -> None:
    """On an install without the ``train`` extra (numpy, opencv, Pillow blocked from importing)."""
    code = f"""
        import sys
        for name in ("numpy", "cv2", "PIL"):
            sys.modules[name] = None  # import raises ModuleNotFoundError, as when not installed
        from binwatch.cli import app
        app({argv!r}, prog_name="binwatch")
    """
    (tmp_path / "bin-images").mkdir()
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1, out.stderr
    assert repr(package) in out.stderr and "pip install 'binwatch[train]'" in out.stderr
    assert "Traceback" not in out.stderr
