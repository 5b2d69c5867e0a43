"""``binwatch hpo --data DIR --trials N``: an Optuna study over training settings.

:func:`register` adds it to :data:`training.cli.app`. Only typer/rich/stdlib at module level.
Options after ``--`` go to every trial's ``binwatch train`` (e.g. ``-- --img-size 128 --workers 4
--max-count 5``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console

from binwatch.cliutil import fail, setup_logging


def register(app: typer.Typer) -> None:
    """Add ``hpo`` to the training command group (options it does not know go to the trials)."""
    app.command("hpo", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})(hpo_cmd)


def _list(text: str, kind: type, flag: str) -> list:
    try:
        out = [kind(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        out = []
    if not out:
        raise fail(f"{flag} {text!r}: give a comma-separated list")
    return out


def hpo_cmd(
    ctx: typer.Context,
    data: Path = typer.Option(
        ..., "--data", help="ABID-layout folder or prepared cache (as for binwatch train)."
    ),
    trials: int = typer.Option(..., "--trials", min=1, help="Trials to run in this process."),
    storage: Optional[str] = typer.Option(
        None,
        "--storage",
        help="Optuna storage URL (default sqlite:///OUT/hpo.db); a PostgreSQL URL lets many "
        "workers share one study.",
    ),
    study_name: str = typer.Option("binwatch", "--study-name", help="Study to create or join."),
    epochs: int = typer.Option(10, "--epochs", min=1, help="Epochs per trial."),
    out: Path = typer.Option(Path("hpo"), "--out", help="Folder for trial runs, trials.csv, best.yaml."),
    metric: str = typer.Option(
        "accuracy", "--metric", help="Validation metric to optimise: accuracy | rmse."
    ),
    archs: str = typer.Option(
        "resnet18", "--archs", help="Architectures to choose from, e.g. resnet18,resnet34."
    ),
    batch_sizes: str = typer.Option("32,64,128", "--batch-sizes", help="Batch sizes to choose from."),
    optimizers: str = typer.Option("sgd,adamw", "--optimizers", help="Optimizers to choose from."),
    losses: str = typer.Option(
        "ce,ordinal,label_smoothing",
        "--losses",
        show_default=False,
        help="Losses to choose from, comma-separated (default: ce, ordinal, label_smoothing).",
    ),
    seed: Optional[int] = typer.Option(None, "--seed", help="Sampler seed (default: random)."),
    timeout: Optional[float] = typer.Option(
        None, "--timeout", help="Stop starting trials after this many seconds."
    ),
    prune: bool = typer.Option(True, "--prune/--no-prune", help="Median pruning on per-epoch validation."),
    keep: str = typer.Option("best", "--keep", help="Trial run folders to keep at the end: best | all."),
) -> None:
    """Hyper-parameter search (Optuna, TPE + median pruning): learning rate, batch size, weight decay,
    optimizer, architecture, loss. Each trial is a binwatch train run; extra train options go after --."""
    from training.hpo import HpoError, HpoOptions, run_hpo
    from training.train import TrainError

    setup_logging(logging.WARNING, logger="training")
    opts = HpoOptions(
        data=data,
        trials=trials,
        out=out,
        storage=storage,
        study_name=study_name,
        epochs=epochs,
        metric=metric,
        archs=_list(archs, str, "--archs"),
        batch_sizes=_list(batch_sizes, int, "--batch-sizes"),
        optimizers=_list(optimizers, str, "--optimizers"),
        losses=_list(losses, str, "--losses"),
        seed=seed,
        timeout=timeout,
        prune=prune,
        keep=keep,
        train_args=list(ctx.args),
    )
    console = Console()

    def on_trial(number: int, state: str, value: Optional[float]) -> None:
        shown = "-" if value is None else f"{value:.4f}"
        console.print(f"trial {number}: {state} (val {metric} {shown})", highlight=False)

    try:
        best = run_hpo(opts, on_trial=on_trial)
    except (HpoError, TrainError) as e:
        raise fail(str(e)) from None
    console.print(
        f"best trial {best['trial']}: val {metric} {best['value']:.4f} with {best['params']}", highlight=False
    )
    console.print(f"repeat it: {best['command']}", highlight=False)
    console.print(f"written to {Path(best['out']) / 'best.yaml'}", highlight=False)
