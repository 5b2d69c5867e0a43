"""Train a count classifier: ``binwatch train`` / ``torchrun -m training.train`` / ``main(args)``.

One process, or DDP under torchrun (``torchrun --nproc_per_node N -m training.train --data ...``).
The run folder (``--out RUN``) gets ``weights.pt`` (best epoch, state dict), ``checkpoint.pt`` (last
epoch: model, optimizer, scheduler, scaler, epoch, best metric, RNG), ``card.json``, ``args.yaml``,
``splits.json``, ``metrics.csv``, ``tb/`` and, with ``--profile``, ``profile/``. ``--init RUN``
fine-tunes from another run's weights (same architecture and classes, checked against its card; a
fresh optimizer and schedule); the card's ``trained_from.parent`` names that run.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, Optional

from training.args import TrainError, check_args, get_args_parser, parse_args, resolve_args
from training.engine import evaluate, train_one_epoch

__all__ = ["TrainError", "evaluate", "get_args_parser", "main", "parse_args", "train_one_epoch"]

log = logging.getLogger(__name__)


def main(
    args: argparse.Namespace | Sequence[str] | None = None,
    epoch_callback: Optional[Callable[[int, dict[str, Any]], None]] = None,
) -> dict[str, Any]:
    """Run a training; returns the final metrics (``val``/``test`` dicts from :func:`evaluate`,
    ``best_epoch``, ``epochs_run``, ``run``, ``val_accuracy``, ``val_rmse``, ``is_synthetic``) and
    ``last_state_sha256``, this rank's hash of the last epoch's weights (equal on every DDP rank).

    ``args`` is a Namespace from :func:`get_args_parser`/:func:`parse_args` or an argv list.
    ``epoch_callback(epoch, row)`` runs after every epoch on every rank with the epoch's metrics row
    (HPO uses it to report and prune: an exception it raises stops the run after the checkpoint).
    """
    if args is None or not isinstance(args, argparse.Namespace):
        args = parse_args(args)
    check_args(args)

    import torch

    from training import distributed
    from training.model import PretrainedWeightsError

    info = distributed.init(args.device)
    try:
        return _run(args, info, epoch_callback)
    except PretrainedWeightsError as e:
        raise TrainError(str(e)) from e
    finally:
        distributed.cleanup(info)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def _run(args, info, epoch_callback) -> dict[str, Any]:
    from training.train_loop import finish, train_epochs
    from training.train_setup import (
        init_from,
        parent_run,
        resume,
        resume_path,
        seed_all,
        setup_data,
        setup_model,
        wrap_model,
    )

    resolve_args(args, info.device.type)
    seed_all(args.seed, args.deterministic)
    checkpoint = resume_path(args)
    t = setup_data(args, info, checkpoint is not None)
    setup_model(t, args, info)
    if checkpoint is not None:
        resume(t, args, checkpoint)  # a resumed fine-tune continues from its own checkpoint
        t.parent = parent_run(args.init) if args.init is not None else None
    elif args.init is not None:
        init_from(t, args)
    wrap_model(t, args, info)
    train_epochs(t, args, info, epoch_callback)
    return finish(t, args, info)


def cli_entry(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m training.train`` / ``torchrun -m training.train``: exit codes for scripts."""
    from binwatch.cliutil import setup_logging

    setup_logging(logging.INFO, logger="training")
    try:
        t0 = time.perf_counter()
        result = main(parse_args(argv))
    except TrainError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    if result.get("rank", 0) == 0:
        log.info(
            "done in %.0f s: val accuracy %.3f, RMSE %.3f (best epoch %d) -> %s",
            time.perf_counter() - t0,
            result["val_accuracy"],
            result["val_rmse"],
            result["best_epoch"],
            result["run"],
        )
    return 0


if __name__ == "__main__":
    sys.exit(cli_entry())
