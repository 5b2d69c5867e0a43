"""``binwatch data synth``: write procedural synthetic bins in the ABID layout.

:func:`register` adds it to the ``data`` group (``training.data.cli.app``). Module level imports only
typer, rich and the stdlib; the generator (numpy, opencv) is imported inside.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Optional

import typer

from binwatch.cliutil import cannot_write, err_console, fail, missing_extra

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def _parse_size(text: str) -> tuple[int, int]:
    m = _SIZE_RE.match(text)
    if not m:
        raise fail(f"--size {text!r} is not WIDTHxHEIGHT; use e.g. --size 448x448")
    return int(m.group(1)), int(m.group(2))


def register(app: typer.Typer) -> None:
    """Add ``synth`` to the ``data`` command group."""
    app.command("synth")(synth_cmd)


def synth_cmd(
    out: Path = typer.Option(..., "--out", "-o", help="Folder to write bin-images/ and metadata/ into."),
    count: int = typer.Option(..., "--count", "-n", help="Number of bins (images) to write.", min=1),
    max_items: int = typer.Option(5, "--max-items", help="Most items in one bin.", min=0),
    seed: int = typer.Option(
        0, "--seed", help="Seed: the same seed and options give identical bytes.", min=0
    ),
    min_items: int = typer.Option(
        0, "--min-items", help="Fewest items in one bin (counts are uniform).", min=0
    ),
    size: Optional[str] = typer.Option(
        None, "--size", help="Fixed image size WIDTHxHEIGHT (default: each side random in --min/--max-size)."
    ),
    min_size: int = typer.Option(
        320, "--min-size", help="Smallest image side in pixels (random sizes).", min=64
    ),
    max_size: int = typer.Option(
        560, "--max-size", help="Largest image side in pixels (random sizes).", min=64
    ),
    mismatch: float = typer.Option(
        0.0,
        "--mismatch",
        help="Fraction of bins whose manifest (in the folder manifest-mismatch/) states a wrong "
        "quantity; mismatch.json lists them.",
        min=0.0,
        max=1.0,
    ),
    mismatch_max: Optional[int] = typer.Option(
        None,
        "--mismatch-max",
        help="No wrong manifest quantity above this (e.g. --max-items: no error stands out by size alone).",
        min=0,
    ),
    views: int = typer.Option(
        1,
        "--views",
        help="Pictures per bin: the same items placed and lit anew in each (keys <bin>-v1.., views.json; "
        "the manifest and mismatch.json are per bin). The demo's agent fuses them.",
        min=1,
        max=32,
    ),
    min_visible: float = typer.Option(
        0.35,
        "--min-visible",
        help="Least visible fraction of every item (higher: less occlusion).",
        min=0.05,
        max=1.0,
    ),
    workers: int = typer.Option(0, "--workers", "-w", help="Processes (0 = one per CPU core).", min=0),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in --out."),
) -> None:
    """Write synthetic bins: a yellow fabric bin with overlapping items, elastic bands and a bin label.

    Layout as ABID: OUT/bin-images/<key>.jpg and OUT/metadata/<key>.json (keys 00001, 00002, ...).

    The label EXPECTED_QUANTITY is the number of items drawn (each keeps >= --min-visible of itself visible,
    35% by default). With --views N each bin is pictured N times (the demo's agent fuses them).

    Deterministic: the same --seed and options give byte-identical files, whatever --workers.

    Example: binwatch data synth --out data/synth --count 2000 --max-items 5 --seed 0
    """
    fixed = _check_sizes(size, min_items, max_items, min_size, max_size)
    n_workers = min(workers or os.cpu_count() or 1, count)
    options = dict(min_items=min_items, mismatch=mismatch, size=fixed, min_size=min_size, max_size=max_size)
    options.update(overwrite=overwrite, views=views, min_visible=min_visible, workers=n_workers)
    options.update(mismatch_max=mismatch_max)
    summary = _synthesize(out, count, max_items, seed, options)
    _print_summary(summary, out, mismatch)
    if views > 1:
        err_console.print(f"{views} views per bin; bin -> image keys in {out / 'views.json'}", markup=False)


def _synthesize(out: Path, count: int, max_items: int, seed: int, options: dict[str, Any]) -> Any:
    """Run the generator with a progress bar; errors become the CLI's error line."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    try:
        from training.data.synth import synthesize
    except ImportError as e:
        raise missing_extra(e, "train") from None

    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, TimeRemainingColumn(), console=err_console, transient=True) as progress:
            task = progress.add_task("synth", total=count)
            return synthesize(
                out, count, max_items, seed, progress=lambda n: progress.advance(task, n), **options
            )
    except FileExistsError:
        raise fail(
            f"{out} already holds a dataset; pass --overwrite to replace it, or choose another --out"
        ) from None
    except ValueError as e:
        raise fail(str(e)) from None
    except OSError as e:
        raise cannot_write(out, e) from None


def _check_sizes(
    size: Optional[str], min_items: int, max_items: int, min_size: int, max_size: int
) -> Optional[tuple[int, int]]:
    """The fixed image size (None: random sizes), once the item and size options agree."""
    fixed = _parse_size(size) if size else None
    if min_items > max_items:
        raise fail(f"--min-items {min_items} is above --max-items {max_items}; lower --min-items")
    if fixed is None and min_size > max_size:
        raise fail(f"--min-size {min_size} is above --max-size {max_size}; swap them")
    if fixed is not None and min(fixed) < 64:
        raise fail(f"--size {size} is too small; use at least 64x64")
    return fixed


def _print_summary(summary, out: Path, mismatch: float) -> None:  # summary: synth.SynthSummary
    hist = ", ".join(f"{k}:{v}" for k, v in summary.counts.items())
    err_console.print(
        f"Wrote {summary.count} bins to {out} in {summary.seconds:.1f} s "
        f"({summary.images_per_s:.1f} images/s); counts {hist}",
        markup=False,
        highlight=False,
    )
    if mismatch > 0:
        err_console.print(
            f"Manifest with {summary.mismatched} wrong quantities: {out / 'manifest-mismatch'} "
            f"(listed in {out / 'mismatch.json'})",
            markup=False,
            highlight=False,
        )
