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

__all__ = ["TrainError", "evaluate", "get_args_parser", "main", "parse_args", "train_one_epoch"]

log = logging.getLogger(__name__)

from training.engine import evaluate, train_one_epoch  # noqa: E402  (re-exported: INTERFACES.md)


class TrainError(ValueError):
    """A bad argument or dataset; the message names the cause and the fix."""


def _size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("x", ",").split(",")
    try:
        hw = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--img-size {text!r}: use S or HxW, e.g. 224 or 224x320") from None
    if len(hw) == 1:
        hw = hw * 2
    if len(hw) != 2 or min(hw) <= 0:
        raise argparse.ArgumentTypeError(f"--img-size {text!r}: use S or HxW, e.g. 224 or 224x320")
    return hw[0], hw[1]


def _ratios(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--split-ratios {text!r}: use e.g. 0.6,0.2,0.2") from None


def get_args_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        "binwatch train", description="Train a bin item-count classifier.", add_help=True
    )
    g = p.add_argument_group("data")
    g.add_argument("--data", type=Path, help="ABID-layout folder (bin-images/ + metadata/)")
    g.add_argument(
        "--cache", type=Path, help="prepared cache (binwatch data prepare); read instead of --data"
    )
    g.add_argument(
        "--split-file",
        action="append",
        default=[],
        help="official split file(s): counting_train.json, counting_val.json (name from the file, "
        "or NAME=FILE); a file_list.json restricts the keys, then splits at random. Repeatable.",
    )
    g.add_argument(
        "--split-ratios", type=_ratios, default=[0.6, 0.2, 0.2], help="random train,val,test split"
    )
    g.add_argument("--split-seed", type=int, default=None, help="seed of the random split (default --seed)")
    g.add_argument("--max-count", type=int, default=5, help="largest count of the head (classes 0..K)")
    g.add_argument(
        "--overflow", action="store_true", help="the last class means 'K or more' (keeps every image)"
    )
    g.add_argument("--limit", type=int, default=None, help="use only the first N images (smoke runs)")
    g.add_argument("--workers", type=int, default=2, help="DataLoader worker processes per rank")

    g = p.add_argument_group("model")
    g.add_argument("--arch", default="resnet18", help="any torchvision classification model name")
    g.add_argument(
        "--pretrained",
        nargs="?",
        const="DEFAULT",
        default=None,
        help="torchvision weights (DEFAULT, IMAGENET1K_V1, ResNet18_Weights.IMAGENET1K_V1)",
    )
    g.add_argument("--freeze-backbone", action="store_true", help="train only the head (transfer learning)")
    g.add_argument(
        "--img-size", type=_size, default=None, help="input S or HxW (default 224, or the cache's)"
    )
    g.add_argument("--resize", choices=["stretch", "letterbox"], default="stretch")
    g.add_argument("--interp", choices=["area", "linear", "cubic"], default="area")

    g = p.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=30)
    g.add_argument("--batch-size", type=int, default=64, help="per rank")
    g.add_argument("--accum-steps", type=int, default=1, help="gradient accumulation steps")
    g.add_argument("--optimizer", choices=["sgd", "adamw"], default="sgd")
    g.add_argument("--lr", type=float, default=None, help="peak learning rate (default 0.05 sgd, 1e-3 adamw)")
    g.add_argument("--momentum", type=float, default=0.9)
    g.add_argument("--nesterov", action="store_true")
    g.add_argument("--weight-decay", type=float, default=None, help="default 1e-4 sgd, 0.05 adamw")
    g.add_argument("--sched", choices=["cosine", "step", "onecycle", "sgdr", "constant"], default="cosine")
    g.add_argument("--warmup-epochs", type=float, default=0.0)
    g.add_argument("--min-lr-ratio", type=float, default=0.0, help="cosine/sgdr floor as a fraction of --lr")
    g.add_argument("--step-epochs", type=int, default=30, help="step schedule: decay every N epochs")
    g.add_argument("--gamma", type=float, default=0.1, help="step schedule: decay factor")
    g.add_argument("--sgdr-t0", type=int, default=10, help="SGDR: first restart period (epochs)")
    g.add_argument("--sgdr-tmult", type=int, default=1, help="SGDR: period multiplier")
    g.add_argument("--label-smoothing", type=float, default=0.0)
    g.add_argument("--ordinal-lambda", type=float, default=0.0, help="loss += lambda * (E[count] - y)^2")
    g.add_argument("--balanced", action="store_true", help="class-balanced sampling")
    g.add_argument("--clip-grad", type=float, default=None, help="max gradient norm")

    g = p.add_argument_group("augmentation (no crops: they cut items out)")
    g.add_argument("--no-augment", action="store_true", help="train on the eval transform")
    g.add_argument("--no-hflip", action="store_true")
    g.add_argument("--vflip", action="store_true")
    g.add_argument("--affine-degrees", type=float, default=5.0)
    g.add_argument("--translate", type=float, default=0.03)
    g.add_argument("--scale-jitter", type=float, default=0.05)
    g.add_argument("--color-jitter", type=float, default=0.2)

    g = p.add_argument_group("system")
    g.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    g.add_argument(
        "--amp", choices=["auto", "none", "bf16", "fp16"], default="auto", help="auto: bf16 on CUDA"
    )
    g.add_argument(
        "--channels-last", action=argparse.BooleanOptionalAction, default=None, help="default: on CUDA"
    )
    g.add_argument("--compile", action="store_true", help="torch.compile the model")
    g.add_argument("--sync-bn", action="store_true", help="DDP on GPUs: synchronise batch-norm statistics")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--deterministic", action="store_true")

    g = p.add_argument_group("run")
    g.add_argument("--out", type=Path, required=False, help="run folder")
    g.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        default=None,
        help="continue from RUN/checkpoint.pt (or the given checkpoint); --epochs is the new total",
    )
    g.add_argument("--exist-ok", action="store_true", help="overwrite a run folder that holds a run")
    g.add_argument(
        "--patience", type=int, default=0, help="early stopping after N epochs without improvement"
    )
    g.add_argument("--select-by", choices=["accuracy", "rmse", "loss"], default="accuracy")
    g.add_argument("--profile", action="store_true", help="write a torch.profiler trace to RUN/profile/")
    g.add_argument("--profile-steps", type=int, default=5)
    g.add_argument("--no-progress", action="store_true")
    g.add_argument("--no-tensorboard", action="store_true")
    g.add_argument("--name", default=None, help="model name in the card (default ARCH-count)")
    g.add_argument("--model-version", type=int, default=1)
    g.add_argument("--config", type=Path, default=None, help="YAML of defaults (e.g. a run's args.yaml)")
    return p


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse ``argv``; a ``--config`` YAML supplies defaults that command-line flags override."""
    parser = get_args_parser()
    pre, _ = parser.parse_known_args(argv)
    if pre.config is not None:
        import yaml

        try:
            conf = yaml.safe_load(Path(pre.config).read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as e:
            raise TrainError(f"cannot read --config {pre.config}: {e}") from e
        known = {a.dest for a in parser._actions}
        unknown = sorted(set(conf) - known)
        if unknown:
            raise TrainError(f"--config {pre.config}: unknown keys {unknown}")
        for key in ("img_size",):
            if isinstance(conf.get(key), list):
                conf[key] = tuple(conf[key])
        parser.set_defaults(**conf)
    return parser.parse_args(argv)


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


def _resolve(args: argparse.Namespace, device_type: str) -> None:
    """Fill defaults that depend on other choices (done once; args.yaml records the result)."""
    import torch

    if args.lr is None:
        args.lr = 0.05 if args.optimizer == "sgd" else 1e-3
    if args.weight_decay is None:
        args.weight_decay = 1e-4 if args.optimizer == "sgd" else 0.05
    if args.split_seed is None:
        args.split_seed = args.seed
    if args.amp == "auto":
        if device_type == "cuda":
            args.amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        else:
            args.amp = "none"
    if args.channels_last is None:
        args.channels_last = device_type == "cuda"


def _check_args(args: argparse.Namespace) -> None:
    if args.data is None and args.cache is None:
        raise TrainError("give --data DIR (ABID layout) or --cache CACHE (binwatch data prepare)")
    if args.out is None:
        raise TrainError("give --out RUN: the run folder to write weights, card.json and logs into")
    if args.epochs < 1 or args.batch_size < 1 or args.accum_steps < 1:
        raise TrainError("--epochs, --batch-size and --accum-steps must be >= 1")
    if args.max_count < 1:
        raise TrainError("--max-count must be >= 1 (the head needs at least two classes)")
    for name in ("data", "cache"):
        path = getattr(args, name)
        if path is not None and not Path(path).is_dir():
            raise TrainError(f"--{name} {path}: no such folder")
    from training.model import available_archs

    if args.arch not in available_archs():
        raise TrainError(
            f"unknown architecture {args.arch!r}; torchvision classification models are: "
            + ", ".join(available_archs())
        )
    if args.resume is None and not args.exist_ok and (Path(args.out) / "checkpoint.pt").exists():
        raise TrainError(
            f"{args.out} already holds a run: pass --resume to continue it or --exist-ok to overwrite"
        )


def _load_items(args: argparse.Namespace):
    """(items, input spec defaults, dataset name, synthetic?)."""
    from contract.card import InputSpec, ResizeSpec
    from training.dataset import is_synthetic, items_from_cache, items_from_dir

    resize = ResizeSpec(method=args.resize, interpolation=args.interp)
    if args.cache is not None:
        from training.prepare import load_index

        try:
            index = load_index(args.cache)
        except (FileNotFoundError, ValueError) as e:
            raise TrainError(str(e)) from e
        if args.img_size is None:
            args.img_size = (index.height, index.width)
        if (index.height, index.width) != tuple(args.img_size) or index.resize != resize:
            log.warning(
                "cache %s holds %dx%d %s/%s images but the model input is %dx%d %s/%s: they are resized "
                "twice, so training-time metrics differ slightly from what the agent computes",
                args.cache,
                index.height,
                index.width,
                index.resize.method,
                index.resize.interpolation,
                *args.img_size,
                resize.method,
                resize.interpolation,
            )
        items = items_from_cache(args.cache)
        dataset, synthetic = index.source, index.synthetic
    else:
        from contract.abid import AbidError

        try:
            items, _report = items_from_dir(args.data)
        except AbidError as e:
            raise TrainError(str(e)) from e
        dataset, synthetic = str(Path(args.data).resolve()), is_synthetic(args.data, items)
    if args.img_size is None:
        args.img_size = (224, 224)
    spec = InputSpec(height=args.img_size[0], width=args.img_size[1], resize=resize)
    return items, spec, dataset, synthetic


def _make_splits(args: argparse.Namespace, items, run: Path, resuming: bool):
    from training.dataset import filter_counts, load_splits_json, parse_split_files, split_items

    items, dropped = filter_counts(items, args.max_count, args.overflow)
    if dropped:
        log.info(
            "left out %d images with more than %d items (add --overflow to keep them)",
            dropped,
            args.max_count,
        )
    if args.limit:
        items = sorted(items, key=lambda it: it.key)[: args.limit]
    saved = run / "splits.json"
    if resuming and saved.is_file():
        return load_splits_json(saved, items)
    try:
        files = parse_split_files(args.split_file)
        return split_items(items, split_files=files or None, ratios=args.split_ratios, seed=args.split_seed)
    except (ValueError, OSError) as e:
        raise TrainError(str(e)) from e


def _loaders(args, splits, spec, counts, info, device):
    from torch.utils.data import DataLoader, DistributedSampler

    from training.dataset import BalancedSampler, CountDataset, ShardSampler
    from training.transforms import AugmentConfig, eval_transform, train_transform

    # workers deliver uint8 images; they are normalized per batch on the device (BatchNormalizer)
    if args.no_augment:
        ttf = eval_transform(spec, normalize=False)
    else:
        cj = args.color_jitter
        ttf = train_transform(
            spec,
            AugmentConfig(
                hflip=not args.no_hflip,
                vflip=args.vflip,
                degrees=args.affine_degrees,
                translate=args.translate,
                scale=(1 - args.scale_jitter, 1 + args.scale_jitter),
                brightness=cj,
                contrast=cj,
                saturation=cj,
                hue=min(0.5, cj / 10),
            ),
            normalize=False,
        )
    train_ds = CountDataset(splits["train"], ttf, counts=counts, overflow=args.overflow)
    if len(train_ds) == 0 or not splits["val"]:
        raise TrainError(
            f"need training and validation images, got train={len(splits['train'])} "
            f"val={len(splits['val'])}: check --data / --split-file (keys are matched verbatim)"
        )
    if args.balanced:
        sampler = BalancedSampler(
            train_ds.targets, len(counts), num_replicas=info.world_size, rank=info.rank, seed=args.seed
        )
    else:  # also in one process: the order depends on (seed, epoch) only, so a resumed run sees the same
        sampler = DistributedSampler(train_ds, info.world_size, info.rank, shuffle=True, seed=args.seed)
    common = {
        "num_workers": args.workers,
        "pin_memory": device.type == "cuda",
        "persistent_workers": args.workers > 0,
    }
    per_rank = len(sampler)  # type: ignore[arg-type]
    train_dl = DataLoader(
        train_ds, batch_size=args.batch_size, sampler=sampler, drop_last=per_rank > args.batch_size, **common
    )
    eval_dls = {}
    for name in ("val", "test"):
        if splits[name]:
            ds = CountDataset(
                splits[name], eval_transform(spec, normalize=False), counts=counts, overflow=args.overflow
            )
            eval_dls[name] = DataLoader(
                ds,
                batch_size=args.batch_size,
                sampler=ShardSampler(len(ds), info.world_size, info.rank),
                **common,
            )
    return train_ds, train_dl, sampler, eval_dls


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
    _check_args(args)

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
    from training.dataset import save_splits_json
    from training.engine import CountLoss
    from training.model import build_model, freeze_backbone, set_backbone_eval
    from training.optim import build_optimizer, build_scheduler
    from training.runlog import MetricsLog, make_card, save_run_card, to_card_metrics, write_args
    from training.transforms import BatchNormalizer

    device = info.device
    _resolve(args, device.type)
    _seed_all(args.seed, args.deterministic)
    run = Path(args.out)
    resume_path = None
    if args.resume is not None:
        resume_path = run / "checkpoint.pt" if args.resume == "auto" else Path(args.resume)
        if not resume_path.is_file():
            raise TrainError(f"--resume: no checkpoint at {resume_path}")

    items, spec, dataset, synthetic = _load_items(args)
    splits, split_how = _make_splits(args, items, run, resume_path is not None)
    counts = list(range(args.max_count + 1))
    train_ds, train_dl, sampler, eval_dls = _loaders(args, splits, spec, counts, info, device)
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
