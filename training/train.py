"""Train a count classifier: ``binwatch train`` / ``torchrun -m training.train`` / ``main(args)``.

One process, or DDP under torchrun (``torchrun --nproc_per_node N -m training.train --data ...``).
The run folder (``--out RUN``) gets ``weights.pt`` (best epoch, state dict), ``checkpoint.pt`` (last
epoch: model, optimizer, scheduler, scaler, epoch, best metric, RNG), ``card.json``, ``args.yaml``,
``splits.json``, ``metrics.csv``, ``tb/`` and, with ``--profile``, ``profile/``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Optional

from training.args import TrainError, check_args, get_args_parser, parse_args, resolve_args
from training.engine import evaluate, train_one_epoch

__all__ = ["TrainError", "evaluate", "get_args_parser", "main", "parse_args", "train_one_epoch"]

log = logging.getLogger(__name__)


def _seed_all(seed: int, deterministic: bool) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    elif torch.cuda.is_available():
        torch.backends.cudnn.benchmark = True


def _improved(select_by: str, val: dict, best: Optional[float]) -> tuple[bool, float]:
    value = float(val[select_by])
    if best is None:
        return True, value
    better = value > best if select_by == "accuracy" else value < best
    return better, value


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
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from training import distributed
    from training.checkpoint import (
        get_rng_state,
        load_checkpoint,
        save_atomic,
        set_rng_state,
        sha256_file,
        state_dict_sha256,
    )
    from training.engine import CountLoss
    from training.loaders import load_items, make_loaders, make_splits
    from training.model import build_model, freeze_backbone, set_backbone_eval
    from training.optim import build_optimizer, build_scheduler
    from training.runlog import MetricsLog, make_card, save_run_card, to_card_metrics, write_args
    from training.splits import save_splits_json
    from training.transforms import BatchNormalizer

    device = info.device
    resolve_args(args, device.type)
    _seed_all(args.seed, args.deterministic)
    run = Path(args.out)
    resume_path = None
    if args.resume is not None:
        resume_path = run / "checkpoint.pt" if args.resume == "auto" else Path(args.resume)
        if not resume_path.is_file():
            raise TrainError(f"--resume: no checkpoint at {resume_path}")

    items, spec, dataset, synthetic = load_items(args)
    splits, split_how = make_splits(args, items, run, resume_path is not None)
    counts = list(range(args.max_count + 1))
    train_ds, train_dl, sampler, eval_dls = make_loaders(args, splits, spec, counts, info, device)
    if info.is_main:
        run.mkdir(parents=True, exist_ok=True)
        save_splits_json(run / "splits.json", splits, split_how)
        write_args(run / "args.yaml", args)
        log.info(
            "data %s: train %d, val %d, test %d (%s); class histogram (train) %s",
            dataset,
            len(splits["train"]),
            len(splits["val"]),
            len(splits["test"]),
            split_how,
            train_ds.class_histogram(),
        )

    # model: rank 0 fetches pretrained weights first, the others then read them from the cache
    if info.distributed and args.pretrained and not info.is_main:
        distributed.barrier(info)
    model = build_model(args.arch, len(counts), args.pretrained)
    if info.distributed and args.pretrained and info.is_main:
        distributed.barrier(info)
    if args.freeze_backbone:
        freeze_backbone(model)
    model.to(device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    raw_model = model
    amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    scaler = torch.amp.GradScaler(device.type) if args.amp == "fp16" else None
    loss_fn = CountLoss(train_ds.count_values, args.label_smoothing, args.ordinal_lambda).to(device)
    optimizer = build_optimizer(
        raw_model,
        args.optimizer,
        args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        nesterov=args.nesterov,
    )
    steps_per_epoch = max(1, -(-len(train_dl) // args.accum_steps))
    scheduler = build_scheduler(
        optimizer,
        args.sched,
        epochs=args.epochs,
        steps_per_epoch=steps_per_epoch,
        warmup_epochs=args.warmup_epochs,
        min_lr_ratio=args.min_lr_ratio,
        step_epochs=args.step_epochs,
        gamma=args.gamma,
        sgdr_t0=args.sgdr_t0,
        sgdr_tmult=args.sgdr_tmult,
    )

    start_epoch, best, best_epoch, stale = 0, None, -1, 0
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path, map_location=device)
        raw_model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        sched_state = dict(ckpt["scheduler"])
        if "lr_lambdas" in sched_state:  # keep this run's schedule (e.g. a longer --epochs)
            sched_state["lr_lambdas"] = [None] * len(sched_state["lr_lambdas"])
        sched_state.pop("total_steps", None)
        scheduler.load_state_dict(sched_state)
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        start_epoch = int(ckpt["epoch"]) + 1
        best, best_epoch, stale = ckpt.get("best"), int(ckpt.get("best_epoch", -1)), int(ckpt.get("stale", 0))
        set_rng_state(ckpt["rng"])
        log.info(
            "resumed from %s at epoch %d (best %s=%s at epoch %d)",
            resume_path,
            start_epoch,
            args.select_by,
            best,
            best_epoch,
        )

    if info.distributed:
        if args.sync_bn and device.type == "cuda":
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
            raw_model = model
        model = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    if args.compile:
        model = torch.compile(model)
    after_train_mode = set_backbone_eval if args.freeze_backbone else None
    normalizer = BatchNormalizer(spec)

    logger = MetricsLog(run, start_epoch, tensorboard=not args.no_tensorboard) if info.is_main else None
    progress = None
    if info.is_main and not args.no_progress:
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
    eval_kw = {
        "count_values": train_ds.count_values,
        "loss_fn": loss_fn,
        "info": info,
        "amp_dtype": amp_dtype,
        "channels_last": args.channels_last,
        "prepare_batch": normalizer,
    }
    epochs_run = start_epoch
    stop_reason = "finished"
    try:
        for epoch in range(start_epoch, args.epochs):
            if hasattr(sampler, "set_epoch"):
                sampler.set_epoch(epoch)
            task = (
                progress.add_task(f"epoch {epoch + 1}/{args.epochs}", total=len(train_dl), loss=float("nan"))
                if progress
                else None
            )

            def on_step(i: int, loss: float, task=task) -> None:
                if progress is not None:
                    progress.update(task, advance=1, loss=loss)

            prof = _profiler(run, args) if args.profile and info.is_main and epoch == start_epoch else None
            with prof if prof is not None else contextlib.nullcontext():
                tr = train_one_epoch(
                    model,
                    train_dl,
                    loss_fn,
                    optimizer,
                    scheduler,
                    device,
                    info=info,
                    scaler=scaler,
                    amp_dtype=amp_dtype,
                    accum_steps=args.accum_steps,
                    channels_last=args.channels_last,
                    max_grad_norm=args.clip_grad,
                    on_step=on_step,
                    profiler=prof,
                    after_train_mode=after_train_mode,
                    prepare_batch=normalizer,
                )
            if prof is not None:
                _write_profile_summary(prof, run)
            if progress is not None:
                progress.remove_task(task)
            val = evaluate(model, eval_dls["val"], device, **eval_kw)
            better, value = _improved(args.select_by, val, best)
            if better:
                best, best_epoch, stale = value, epoch, 0
            else:
                stale += 1
            epochs_run = epoch + 1
            row = {"epoch": epoch}
            if info.is_main:
                row = logger.write(epoch, tr, val)
                if better:
                    save_atomic(raw_model.state_dict(), run / "weights.pt")
                save_atomic(
                    {
                        "model": raw_model.state_dict(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "scaler": scaler.state_dict() if scaler is not None else {},
                        "epoch": epoch,
                        "best": best,
                        "best_epoch": best_epoch,
                        "stale": stale,
                        "select_by": args.select_by,
                        "rng": get_rng_state(),
                    },
                    run / "checkpoint.pt",
                )
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
            if args.patience and stale >= args.patience:
                stop_reason = f"early stop: no {args.select_by} improvement for {stale} epochs"
                log.info(stop_reason)
                break
    finally:
        if progress is not None:
            progress.stop()
        if logger is not None:
            logger.close()

    # final: the best weights on val (and test), the card
    last_sha = state_dict_sha256(raw_model.state_dict())  # per rank: DDP keeps them identical
    distributed.barrier(info)
    best_state = torch.load(run / "weights.pt", map_location=device, weights_only=True)
    raw_model.load_state_dict(best_state)
    final = {name: evaluate(model, dl, device, **eval_kw) for name, dl in eval_dls.items()}
    if info.is_main:
        metrics = [
            to_card_metrics(m, dataset=dataset, split=name, is_synthetic=synthetic)
            for name, m in final.items()
        ]
        card = make_card(
            run=run,
            args=args,
            spec=spec,
            counts=counts,
            overflow=args.overflow,
            metrics=metrics,
            dataset=dataset,
            split_how=split_how,
            epochs=epochs_run,
            weights_sha256=sha256_file(run / "weights.pt"),
        )
        save_run_card(card, run)
    distributed.barrier(info)
    return {
        "run": str(run),
        "best_epoch": best_epoch,
        "epochs_run": epochs_run,
        "stop_reason": stop_reason,
        "select_by": args.select_by,
        "val": final.get("val"),
        "test": final.get("test"),
        "val_accuracy": final["val"]["accuracy"],
        "val_rmse": final["val"]["rmse"],
        "is_synthetic": synthetic,
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


def cli_entry(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m training.train`` / ``torchrun -m training.train``: exit codes for scripts."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
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
