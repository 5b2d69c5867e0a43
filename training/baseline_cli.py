"""``binwatch baseline --data DIR``: the CS229 seed's classical baseline (thumbnails -> PCA -> SVM /
logistic regression) as a reference row for the evaluation report.

:func:`register` adds it to :data:`training.cli.app`. Only typer/rich/stdlib at module level.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from binwatch.cliutil import fail, setup_logging
from training.cli_progress import stage_progress

_err = Console(stderr=True)


def register(app: typer.Typer) -> None:
    """Add ``baseline`` to the training command group."""
    app.command("baseline")(baseline_cmd)


def baseline_cmd(
    data: Path = typer.Option(..., "--data", help="ABID-layout folder or prepared cache with labels."),
    split_file: list[str] = typer.Option(
        [], "--split-file", help="Split file(s), as for binwatch train (NAME=FILE allowed). Repeatable."
    ),
    run: Optional[Path] = typer.Option(
        None, "--run", help="Training run: use its splits.json and head, and write RUN/baseline.json."
    ),
    size: int = typer.Option(32, "--size", min=4, max=256, help="Thumbnail side in pixels."),
    color: str = typer.Option("gray", "--color", help="gray | rgb thumbnails."),
    pca: int = typer.Option(50, "--pca", min=1, help="PCA components (fitted on the train split)."),
    models: str = typer.Option(
        "linear_svm,logreg", "--models", help="Comma list of linear_svm, rbf_svm, logreg."
    ),
    max_count: int = typer.Option(5, "--max-count", min=1, help="Largest count (without --run)."),
    overflow: bool = typer.Option(False, "--overflow", help="Last class means 'max-count or more'."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random split (same default as binwatch train)."),
    workers: int = typer.Option(2, "--workers", min=1, help="Decoding threads."),
    out: Optional[Path] = typer.Option(
        None, "--out", help="Output JSON (default RUN/baseline.json with --run, else ./baseline.json)."
    ),
) -> None:
    """Classical baseline (CS229 seed): thumbnails -> PCA -> linear SVM / RBF SVM / logistic regression,
    scored with abid_challenge's accuracy and RMSE on the same splits as training."""
    from training.baseline import BaselineError, run_baseline

    setup_logging(logging.WARNING, logger="training")
    if color not in ("gray", "rgb"):
        raise fail(f"--color {color!r}: choose gray or rgb")
    target = out or (run / "baseline.json" if run is not None else Path("baseline.json"))
    with stage_progress(_err) as progress:
        try:
            r = run_baseline(
                data,
                split_files=split_file,
                run=run,
                size=size,
                color=color,
                pca=pca,
                models=[m.strip() for m in models.split(",") if m.strip()],
                max_count=max_count,
                overflow=overflow,
                seed=seed,
                workers=workers,
                out=target,
                progress=progress,
            )
        except BaselineError as e:
            raise fail(str(e)) from None
        except OSError as e:
            raise fail(str(e), 1) from None
    from rich.table import Table

    note = " (synthetic: pipeline check)" if r["is_synthetic"] else ""
    t = Table("model", "split", "n", "accuracy", "RMSE", title=f"classical baseline on {r['dataset']}{note}")
    for split, by_model in r["splits"].items():
        for name, m in by_model.items():
            t.add_row(name, split, str(m["n"]), f"{100 * m['accuracy']:.2f}%", f"{m['rmse']:.3f}")
    Console().print(t)
    Console().print(f"written to {r['out']}", highlight=False)
