"""Top-level training commands: ``binwatch train`` (here), ``eval``/``hpo``/``baseline`` (sibling
``*_cli`` modules, registered on ``app`` below).

``binwatch train`` hands its arguments to :func:`training.train.parse_args`, the same parser that
``torchrun -m training.train`` uses, so both accept exactly the same flags
(``binwatch train --help`` lists them). Only typer/rich/stdlib are imported at module level.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import typer
from rich.console import Console

from binwatch.cliutil import fail, setup_logging
from training import baseline_cli, eval_cli, hpo_cli

app = typer.Typer(no_args_is_help=True)

_err = Console(stderr=True, soft_wrap=True)


@app.command(
    "train",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def train_cmd(ctx: typer.Context) -> None:
    """Train a count classifier: binwatch train --data DIR --arch resnet18 --epochs E --out RUN.

    Run `binwatch train --help` for every option. `--nproc N` starts N DDP processes with torchrun
    (one per GPU; gloo on CPU).
    """
    argv = list(ctx.args)
    if not argv or "-h" in argv or "--help" in argv:
        from training.train import get_args_parser

        parser = get_args_parser()
        typer.echo(parser.format_help())
        typer.echo(
            "Multi-process (DDP): binwatch train --nproc N ... or\n"
            "  torchrun --nproc_per_node N -m training.train ...\n"
            "(multi-node: see docs/training.md)"
        )
        raise typer.Exit(code=0 if argv else 2)
    nproc = _pop_nproc(argv)
    if nproc and nproc > 1 and "WORLD_SIZE" not in os.environ:
        cmd = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={nproc}",
            "-m",
            "training.train",
            *argv,
        ]
        _err.print(f"starting {nproc} processes: {' '.join(cmd[1:])}", highlight=False)
        raise typer.Exit(code=subprocess.call(cmd))

    from training.train import TrainError, main, parse_args

    setup_logging(logging.INFO, logger="training")
    try:
        result = main(parse_args(argv))
    except TrainError as e:
        raise fail(str(e)) from None
    except (OSError, FloatingPointError) as e:
        raise fail(str(e), 1) from None
    val = result["val"]
    typer.echo(
        f"best epoch {result['best_epoch'] + 1}/{result['epochs_run']}: val accuracy {val['accuracy']:.3f}, "
        f"RMSE {val['rmse']:.3f}, MAE {val['mae']:.3f} (n={val['n']}"
        f"{', synthetic data' if result['is_synthetic'] else ''}) -> {result['run']}"
    )


def _pop_nproc(argv: list[str]) -> int | None:
    for i, a in enumerate(argv):
        if a == "--nproc" and i + 1 < len(argv):
            value = argv[i + 1]
            del argv[i : i + 2]
            return _int(value)
        if a.startswith("--nproc="):
            del argv[i]
            return _int(a.split("=", 1)[1])
    return None


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise fail(f"--nproc {text!r}: give a number of processes") from None


# evaluation, HPO and the classical baseline: their modules import only typer/rich/stdlib too
eval_cli.register(app)
hpo_cli.register(app)
baseline_cli.register(app)
