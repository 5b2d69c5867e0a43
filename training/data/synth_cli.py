"""``binwatch data synth``: write procedural synthetic bins in the ABID layout.

Registers itself on the ``data`` group (``training.data.cli.app``), which imports this module last.
Module level imports only typer, rich and the stdlib; the generator (numpy, opencv) is imported inside.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Optional

import typer

from training.data.cli import _cannot_write, _err, _fail, _missing_extra, app

_SIZE_RE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def _parse_size(text: str) -> tuple[int, int]:
    m = _SIZE_RE.match(text)
    if not m:
        raise _fail(f"--size {text!r} is not WIDTHxHEIGHT; use e.g. --size 448x448")
    return int(m.group(1)), int(m.group(2))


@app.command("synth")
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
        help="Fraction of bins whose manifest (manifest-mismatch/<key>.json) states a wrong quantity; "
        "mismatch.json lists them.",
        min=0.0,
        max=1.0,
    ),
    workers: int = typer.Option(0, "--workers", "-w", help="Processes (0 = one per CPU core).", min=0),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a dataset already in --out."),
) -> None:
    """Write synthetic bins: a yellow fabric bin with overlapping items, elastic bands and a bin label.

    Layout as ABID: OUT/bin-images/<key>.jpg and OUT/metadata/<key>.json (keys 00001, 00002, ...).

    The label EXPECTED_QUANTITY is the number of items drawn (each keeps >= 35% of itself visible).

    Deterministic: the same --seed and options give byte-identical files, whatever --workers.

    Example: binwatch data synth --out data/synth --count 2000 --max-items 5 --seed 0
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    try:
        from training.data.synth import synthesize
    except ImportError as e:
        raise _missing_extra(e) from None

    fixed = _parse_size(size) if size else None
    if min_items > max_items:
        raise _fail(f"--min-items {min_items} is above --max-items {max_items}; lower --min-items")
    if fixed is None and min_size > max_size:
        raise _fail(f"--min-size {min_size} is above --max-size {max_size}; swap them")
    if fixed is not None and min(fixed) < 64:
        raise _fail(f"--size {size} is too small; use at least 64x64")
    n_workers = workers or os.cpu_count() or 1
    columns = (TextColumn("[progress.description]{task.description}"), BarColumn(), MofNCompleteColumn())
    try:
        with Progress(*columns, TimeRemainingColumn(), console=_err, transient=True) as progress:
            task = progress.add_task("synth", total=count)
            summary = synthesize(
                out,
                count,
                max_items,
                seed,
                min_items=min_items,
                mismatch=mismatch,
                workers=min(n_workers, count),
                progress=lambda n: progress.advance(task, n),
                size=fixed,
                min_size=min_size,
                max_size=max_size,
                overwrite=overwrite,
            )
    except FileExistsError:
        raise _fail(
            f"{out} already holds a dataset; pass --overwrite to replace it, or choose another --out"
        ) from None
    except ValueError as e:
        raise _fail(str(e)) from None
    except OSError as e:
        raise _cannot_write(out, e) from None
    hist = ", ".join(f"{k}:{v}" for k, v in summary.counts.items())
    _err.print(
        f"Wrote {summary.count} bins to {out} in {summary.seconds:.1f} s "
        f"({summary.images_per_s:.1f} images/s); counts {hist}",
        markup=False,
        highlight=False,
    )
    if mismatch > 0:
        _err.print(
            f"Manifest with {summary.mismatched} wrong quantities: {out / 'manifest-mismatch'} "
            f"(listed in {out / 'mismatch.json'})",
            markup=False,
            highlight=False,
        )
