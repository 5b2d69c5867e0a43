"""The set-up stages of a training run (:func:`training.train.main`): the data and loaders, the
model with its loss, optimizer, schedule and AMP scaler, resuming from a checkpoint, and the DDP /
``torch.compile`` wrappers. They fill in a :class:`Training`, which the epoch loop
(:mod:`training.train_loop`) then uses. Torch is imported inside the functions.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from training.args import TrainError

__all__ = [
    "Training",
    "init_from",
    "parent_run",
    "resume",
    "resume_path",
    "seed_all",
    "setup_data",
    "setup_model",
    "wrap_model",
]

log = logging.getLogger("training.train")  # the run logs as one logger, whichever stage


def seed_all(seed: int, deterministic: bool) -> None:
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


@dataclass
class Training:
    """What the stages of a run share: data, model, optimisation state and the best epoch so far."""

    run: Path
    device: Any
    spec: Any
    dataset: str
    synthetic: bool
    split_how: str
    counts: list[int]
    train_ds: Any
    train_dl: Any
    sampler: Any
    eval_dls: dict[str, Any]
    model: Any = None
    raw_model: Any = None  # the model without DDP / torch.compile wrappers: what is saved
    amp_dtype: Any = None
    scaler: Any = None
    loss_fn: Any = None
    optimizer: Any = None
    scheduler: Any = None
    start_epoch: int = 0
    best: Optional[float] = None
    best_epoch: int = -1
    stale: int = 0
    epochs_run: int = 0
    stop_reason: str = "finished"
    eval_kw: dict[str, Any] = field(default_factory=dict)
    after_train_mode: Optional[Callable[[Any], None]] = None
    parent: Any = None  # contract.card.ParentRun of --init RUN: recorded in the card's trained_from


def resume_path(args) -> Optional[Path]:
    if args.resume is None:
        return None
    path = Path(args.out) / "checkpoint.pt" if args.resume == "auto" else Path(args.resume)
    if not path.is_file():
        raise TrainError(f"--resume: no checkpoint at {path}")
    return path


def setup_data(args, info, resuming: bool) -> Training:
    """Items, split and loaders; rank 0 records the split and the arguments in the run folder."""
    from training.loaders import load_items, make_loaders, make_splits
    from training.runlog import write_args
    from training.splits import save_splits_json

    run = Path(args.out)
    items, spec, dataset, synthetic = load_items(args)
    splits, split_how = make_splits(args, items, run, resuming)
    counts = list(range(args.max_count + 1))
    train_ds, train_dl, sampler, eval_dls = make_loaders(args, splits, spec, counts, info, info.device)
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
    return Training(
        run, info.device, spec, dataset, synthetic, split_how, counts, train_ds, train_dl, sampler, eval_dls
    )


def setup_model(t: Training, args, info) -> None:
    """Model, loss, optimizer, schedule and AMP scaler (before any checkpoint is loaded)."""
    import torch

    from training import distributed
    from training.engine import CountLoss
    from training.model import build_model, freeze_backbone
    from training.optim import build_optimizer, build_scheduler

    # rank 0 fetches pretrained weights first, the others then read them from the cache
    if info.distributed and args.pretrained and not info.is_main:
        distributed.barrier(info)
    model = build_model(args.arch, len(t.counts), args.pretrained)
    if info.distributed and args.pretrained and info.is_main:
        distributed.barrier(info)
    if args.freeze_backbone:
        freeze_backbone(model)
    model.to(t.device)
    if args.channels_last:
        model.to(memory_format=torch.channels_last)
    t.model = t.raw_model = model
    t.amp_dtype = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.amp]
    t.scaler = torch.amp.GradScaler(t.device.type) if args.amp == "fp16" else None
    t.loss_fn = CountLoss(t.train_ds.count_values, args.label_smoothing, args.ordinal_lambda).to(t.device)
    t.optimizer = build_optimizer(
        model,
        args.optimizer,
        args.lr,
        momentum=args.momentum,
        weight_decay=args.weight_decay,
        nesterov=args.nesterov,
    )
    t.scheduler = build_scheduler(
        t.optimizer,
        args.sched,
        epochs=args.epochs,
        steps_per_epoch=max(1, -(-len(t.train_dl) // args.accum_steps)),
        warmup_epochs=args.warmup_epochs,
        min_lr_ratio=args.min_lr_ratio,
        step_epochs=args.step_epochs,
        gamma=args.gamma,
        sgdr_t0=args.sgdr_t0,
        sgdr_tmult=args.sgdr_tmult,
    )


def resume(t: Training, args, resume_path: Path) -> None:
    """Model, optimizer, schedule position, scaler, best epoch and RNG state from a checkpoint."""
    from training.checkpoint import load_checkpoint, set_rng_state

    ckpt = load_checkpoint(resume_path, map_location=t.device)
    t.raw_model.load_state_dict(ckpt["model"])
    t.optimizer.load_state_dict(ckpt["optimizer"])
    sched_state = dict(ckpt["scheduler"])
    if "lr_lambdas" in sched_state:  # keep this run's schedule (e.g. a longer --epochs)
        sched_state["lr_lambdas"] = [None] * len(sched_state["lr_lambdas"])
    sched_state.pop("total_steps", None)
    t.scheduler.load_state_dict(sched_state)
    if t.scaler is not None and ckpt.get("scaler"):
        t.scaler.load_state_dict(ckpt["scaler"])
    t.start_epoch = int(ckpt["epoch"]) + 1
    t.best, t.best_epoch = ckpt.get("best"), int(ckpt.get("best_epoch", -1))
    t.stale = int(ckpt.get("stale", 0))
    set_rng_state(ckpt["rng"])
    log.info(
        "resumed from %s at epoch %d (best %s=%s at epoch %d)",
        resume_path,
        t.start_epoch,
        args.select_by,
        t.best,
        t.best_epoch,
    )


def parent_run(run: Path) -> Any:
    """The :class:`~contract.card.ParentRun` of ``--init RUN`` (its card was checked by
    :func:`training.args.check_init`); weights.pt must be the file its card names."""
    from contract.card import ParentRun, load_card
    from contract.files import sha256_file

    card = load_card(run)
    digest = sha256_file(run / "weights.pt")
    named = card.artifact("pytorch", "fp32")
    if named is not None and named.sha256 != digest:
        raise TrainError(
            f"--init {run}: weights.pt is not the file its card names (sha256 {digest[:12]}..., the card "
            f"says {named.sha256[:12]}...): was it replaced after training?"
        )
    # the run's own id (a copied or moved run folder keeps it), else the folder's name
    run_id = card.trained_from.run_id if card.trained_from is not None else run.resolve().name
    return ParentRun(run_id=run_id, name=card.name, version=card.version, weights_sha256=digest)


def init_from(t: Training, args) -> None:
    """``--init RUN``: the parent's weights into the fresh model, strictly (every tensor, same
    shapes); the optimizer, schedule, epoch count and best epoch stay fresh."""
    import pickle

    import torch

    from contract.card import load_card

    run = Path(args.init)
    t.parent = parent_run(run)
    try:
        state = torch.load(run / "weights.pt", map_location=t.device, weights_only=True)
        t.raw_model.load_state_dict(state, strict=True)
    except (RuntimeError, ValueError, EOFError, OSError, pickle.UnpicklingError) as e:
        raise TrainError(
            f"--init {run}: its weights.pt does not load into {args.arch} with {len(t.counts)} classes: "
            + " ".join(str(e).split())
        ) from e
    parent_input = load_card(run).input
    if parent_input != t.spec:
        differs = [k for k, v in parent_input.model_dump().items() if t.spec.model_dump().get(k) != v]
        log.warning("--init %s: the parent was trained on other inputs (%s differ)", run, ", ".join(differs))
    log.info(
        "initialised from %s (%s version %d, weights %s); fresh optimizer and schedule",
        run,
        t.parent.name,
        t.parent.version,
        t.parent.weights_sha256[:12],
    )


def wrap_model(t: Training, args, info) -> None:
    """DDP (with synchronised batch norm on GPUs when asked) and ``torch.compile``; what the
    training and evaluation steps need besides the model."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    from training.model import set_backbone_eval
    from training.transforms import BatchNormalizer

    device = t.device
    if info.distributed:
        if args.sync_bn and device.type == "cuda":
            t.model = t.raw_model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(t.model)
        t.model = DistributedDataParallel(
            t.model, device_ids=[device.index] if device.type == "cuda" else None
        )
    if args.compile:
        t.model = torch.compile(t.model)
    t.after_train_mode = set_backbone_eval if args.freeze_backbone else None
    t.eval_kw = {
        "count_values": t.train_ds.count_values,
        "loss_fn": t.loss_fn,
        "info": info,
        "amp_dtype": t.amp_dtype,
        "channels_last": args.channels_last,
        "prepare_batch": BatchNormalizer(t.spec),
    }
