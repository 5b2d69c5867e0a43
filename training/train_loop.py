"""The epoch loop of a training run (:func:`training.train.main`): train and score every epoch,
log it, save ``weights.pt`` (best epoch) and ``checkpoint.pt`` (last epoch), stop early when asked;
then score the best weights and write the card (:func:`finish`).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any, Optional

from training.engine import evaluate, train_one_epoch
from training.train_setup import Training

__all__ = ["finish", "train_epochs"]

log = logging.getLogger("training.train")  # the run logs as one logger, whichever stage


def _improved(select_by: str, val: dict, best: Optional[float]) -> tuple[bool, float]:
    value = float(val[select_by])
    if best is None:
        return True, value
    better = value > best if select_by == "accuracy" else value < best
    return better, value


def _progress_bar(args, info):
    if not info.is_main or args.no_progress:
        return None
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(),
        transient=True,
    )
    progress.start()
    return progress


def train_epochs(t: Training, args, info, epoch_callback) -> None:
    """Epochs ``t.start_epoch .. args.epochs - 1`` (or until early stopping), a checkpoint after each."""
    from training import distributed
    from training.runlog import MetricsLog

    logger = MetricsLog(t.run, t.start_epoch, tensorboard=not args.no_tensorboard) if info.is_main else None
    progress = _progress_bar(args, info)
    t.epochs_run = t.start_epoch
    try:
        for epoch in range(t.start_epoch, args.epochs):
            tr, val, better = _one_epoch(t, args, info, epoch, progress)
            row = {"epoch": epoch}
            if info.is_main:
                row = logger.write(epoch, tr, val)
                _save_epoch(t, args, epoch, better)
                log.info(
                    "epoch %d: loss %.4f acc %.3f | val loss %.4f acc %.3f rmse %.3f | %.0f img/s | lr %.2e",
                    epoch,
                    tr["loss"],
                    tr["accuracy"],
                    val["loss"],
                    val["accuracy"],
                    val["rmse"],
                    tr["images_per_s"],
                    tr["lr"],
                )
            distributed.barrier(info)
            if epoch_callback is not None:
                epoch_callback(epoch, {**row, "val": val, "train": tr})
            if args.patience and t.stale >= args.patience:
                t.stop_reason = f"early stop: no {args.select_by} improvement for {t.stale} epochs"
                log.info(t.stop_reason)
                break
    finally:
        if progress is not None:
            progress.stop()
        if logger is not None:
            logger.close()


def _one_epoch(t: Training, args, info, epoch: int, progress) -> tuple[dict, dict, bool]:
    """Train one epoch and score it on val; returns (train metrics, val metrics, improved?)."""
    if hasattr(t.sampler, "set_epoch"):
        t.sampler.set_epoch(epoch)
    task = (
        progress.add_task(f"epoch {epoch + 1}/{args.epochs}", total=len(t.train_dl), loss=float("nan"))
        if progress
        else None
    )

    def on_step(i: int, loss: float, task=task) -> None:
        if progress is not None:
            progress.update(task, advance=1, loss=loss)

    prof = _profiler(t.run, args) if args.profile and info.is_main and epoch == t.start_epoch else None
    with prof if prof is not None else contextlib.nullcontext():
        tr = train_one_epoch(
            t.model,
            t.train_dl,
            t.loss_fn,
            t.optimizer,
            t.scheduler,
            t.device,
            info=info,
            scaler=t.scaler,
            amp_dtype=t.amp_dtype,
            accum_steps=args.accum_steps,
            channels_last=args.channels_last,
            max_grad_norm=args.clip_grad,
            on_step=on_step,
            profiler=prof,
            after_train_mode=t.after_train_mode,
            prepare_batch=t.eval_kw["prepare_batch"],
        )
    if prof is not None:
        _write_profile_summary(prof, t.run)
    if progress is not None:
        progress.remove_task(task)
    val = evaluate(t.model, t.eval_dls["val"], t.device, **t.eval_kw)
    better, value = _improved(args.select_by, val, t.best)
    if better:
        t.best, t.best_epoch, t.stale = value, epoch, 0
    else:
        t.stale += 1
    t.epochs_run = epoch + 1
    return tr, val, better


def _save_epoch(t: Training, args, epoch: int, better: bool) -> None:
    """Rank 0: ``weights.pt`` when the epoch improved, ``checkpoint.pt`` always."""
    from training.checkpoint import get_rng_state, save_atomic

    if better:
        save_atomic(t.raw_model.state_dict(), t.run / "weights.pt")
    save_atomic(
        {
            "model": t.raw_model.state_dict(),
            "optimizer": t.optimizer.state_dict(),
            "scheduler": t.scheduler.state_dict(),
            "scaler": t.scaler.state_dict() if t.scaler is not None else {},
            "epoch": epoch,
            "best": t.best,
            "best_epoch": t.best_epoch,
            "stale": t.stale,
            "select_by": args.select_by,
            "rng": get_rng_state(),
        },
        t.run / "checkpoint.pt",
    )


def finish(t: Training, args, info) -> dict[str, Any]:
    """The best weights scored on val (and test), the card (rank 0), and what :func:`main` returns."""
    import torch

    from contract.files import sha256_file
    from training import distributed
    from training.checkpoint import state_dict_sha256
    from training.runlog import make_card, save_run_card, to_card_metrics

    last_sha = state_dict_sha256(t.raw_model.state_dict())  # per rank: DDP keeps them identical
    distributed.barrier(info)
    best_state = torch.load(t.run / "weights.pt", map_location=t.device, weights_only=True)
    t.raw_model.load_state_dict(best_state)
    final = {name: evaluate(t.model, dl, t.device, **t.eval_kw) for name, dl in t.eval_dls.items()}
    if info.is_main:
        metrics = [
            to_card_metrics(m, dataset=t.dataset, split=name, is_synthetic=t.synthetic)
            for name, m in final.items()
        ]
        card = make_card(
            run=t.run,
            args=args,
            spec=t.spec,
            counts=t.counts,
            overflow=args.overflow,
            metrics=metrics,
            dataset=t.dataset,
            split_how=t.split_how,
            epochs=t.epochs_run,
            weights_sha256=sha256_file(t.run / "weights.pt"),
            parent=t.parent,
        )
        save_run_card(card, t.run)
    distributed.barrier(info)
    return {
        "run": str(t.run),
        "best_epoch": t.best_epoch,
        "epochs_run": t.epochs_run,
        "stop_reason": t.stop_reason,
        "select_by": args.select_by,
        "val": final.get("val"),
        "test": final.get("test"),
        "val_accuracy": final["val"]["accuracy"],
        "val_rmse": final["val"]["rmse"],
        "is_synthetic": t.synthetic,
        "rank": info.rank,
        "world_size": info.world_size,
        "last_state_sha256": last_sha,
    }


def _profiler(run: Path, args):
    import torch
    from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

    activities = [ProfilerActivity.CPU]
    if torch.cuda.is_available():
        activities.append(ProfilerActivity.CUDA)
    (run / "profile").mkdir(parents=True, exist_ok=True)
    return profile(
        activities=activities,
        schedule=schedule(wait=1, warmup=1, active=max(1, args.profile_steps), repeat=1),
        on_trace_ready=tensorboard_trace_handler(str(run / "profile")),
        record_shapes=True,
    )


def _write_profile_summary(prof, run: Path) -> None:
    try:
        table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30)
    except (RuntimeError, AssertionError) as e:  # too few steps to have recorded anything
        log.warning("profiler recorded nothing (%s): use more batches or fewer --profile-steps", e)
        return
    (run / "profile" / "summary.txt").write_text(table, encoding="utf-8")
    log.info("profiler trace in %s", run / "profile")
