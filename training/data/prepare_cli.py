"""``binwatch data prepare``: :func:`register` adds it to the ``data`` group (training/data/cli.py).
Module level imports only typer, rich and the stdlib; the cache builder is imported inside."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from binwatch.cliutil import fail

_err = Console(stderr=True, soft_wrap=True)


def register(app: typer.Typer) -> None:
    """Add ``prepare`` to the ``data`` command group."""
    app.command("prepare")(prepare_cmd)


def prepare_cmd(
    src: Path = typer.Argument(..., help="ABID-layout folder (bin-images/ + metadata/)."),
    out: Path = typer.Option(..., "--out", "-o", help="Cache folder to write (index.json + images/)."),
    size: str = typer.Option("224", "--size", help="Model input size the cache is made for: S or HxW."),
    resize: str = typer.Option(
        "stretch", "--resize", help="stretch or letterbox (as the model card's input.resize)."
    ),
    interp: str = typer.Option("area", "--interp", help="area, linear or cubic (OpenCV interpolation)."),
    encoding: str = typer.Option(
        "npy", "--encoding", help="npy (raw, fastest), png (lossless, half the disk) or jpg (q95, lossy)."
    ),
    split_file: list[Path] = typer.Option(
        [],
        "--split-file",
        help="Record each key's split (counting_train.json, counting_val.json); repeatable.",
    ),
    max_count: Optional[int] = typer.Option(
        None, "--max-count", help="Leave out images with more items.", min=0
    ),
    workers: Optional[int] = typer.Option(
        None, "--workers", help="Decoder processes (default: all cores).", min=1
    ),
    no_reduce: bool = typer.Option(
        False, "--no-reduce", help="Always decode full size (bit-exact with the agent's path; slower)."
    ),
    reduce_margin: float = typer.Option(
        1.0,
        "--reduce-margin",
        help="Use JPEG DCT-scaled decoding only if the result is >= this x the target.",
        min=1.0,
    ),
) -> None:
    """Decode every image once into a cache already at the model's input size.

    Training with --cache CACHE then skips full-size JPEG decoding. Re-run to resume.
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from contract.abid import AbidError
    from training.prepare import prepare, summary

    spec, files = _options(size, resize, interp, encoding, split_file)
    if not src.is_dir():
        raise fail(f"{src}: no such folder (expected bin-images/ and metadata/)")
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn())
    with Progress(*columns, TimeRemainingColumn(), console=_err, transient=True) as progress:
        task = progress.add_task("prepare", total=None)
        try:
            index, failures = prepare(
                src,
                out,
                spec,
                encoding=encoding,
                reduce_margin=None if no_reduce else reduce_margin,
                workers=workers,
                split_files=files or None,
                max_count=max_count,
                on_total=lambda n: progress.update(task, total=n),
                on_item=lambda _k, _e: progress.advance(task),
            )
        except (AbidError, ValueError, OSError) as e:
            raise fail(str(e)) from None
    s = summary(index)
    typer.echo(
        f"{s['images']} images at {spec.height}x{spec.width} ({resize}/{interp}, {encoding}) in {out}; "
        f"splits {s['splits']}; {s['reduced_decodes']} decoded reduced; {len(failures)} failed"
    )
    for key, why in sorted(failures.items())[:20]:
        _err.print(f"[yellow]failed[/yellow] {key}: {why}", highlight=False)
    if failures:
        raise typer.Exit(code=1)


def _options(size: str, resize: str, interp: str, encoding: str, split_file: list[Path]):
    """(input spec, split files) from the options; a bad one exits 2 naming it."""
    from contract.card import InputSpec, ResizeSpec
    from training.splits import parse_split_files

    try:
        parts = [int(p) for p in size.lower().replace("x", ",").split(",")]
        h, w = (parts * 2)[:2] if len(parts) == 1 else parts
        spec = InputSpec(height=h, width=w, resize=ResizeSpec(method=resize, interpolation=interp))
        files = parse_split_files(split_file)
        if encoding not in ("png", "npy", "jpg"):
            raise ValueError(f"--encoding {encoding!r}: use png, npy or jpg")
    except ValueError as e:  # pydantic's ValidationError is a ValueError too
        raise fail(f"bad option: {e}") from None
    return spec, files
