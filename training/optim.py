"""Optimizers and learning-rate schedules (all stepped once per optimizer step)."""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

__all__ = ["SCHEDULES", "build_optimizer", "build_scheduler"]

SCHEDULES = ("cosine", "step", "onecycle", "sgdr", "constant")


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on biases and normalisation weights (1-D parameters)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if not p.requires_grad:
            continue
        (no_decay if p.ndim <= 1 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def build_optimizer(
    model: nn.Module,
    name: str = "sgd",
    lr: float = 0.1,
    *,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
    nesterov: bool = False,
    betas: Iterable[float] = (0.9, 0.999),
) -> torch.optim.Optimizer:
    groups = _param_groups(model, weight_decay)
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0)
    if name == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas))
    raise ValueError(f"unknown optimizer {name!r}; use sgd or adamw")


class _WarmupLambda:
    """Picklable LambdaLR factor: linear warm-up, then cosine / step / constant."""

    def __init__(
        self,
        kind: str,
        total: int,
        warmup: int,
        steps_per_epoch: int,
        min_factor: float,
        step_epochs: int,
        gamma: float,
    ) -> None:
        self.kind, self.total, self.warmup = kind, max(1, total), warmup
        self.steps_per_epoch, self.min_factor = max(1, steps_per_epoch), min_factor
        self.step_epochs, self.gamma = max(1, step_epochs), gamma

    def __call__(self, step: int) -> float:
        if self.warmup and step < self.warmup:
            return (step + 1) / (self.warmup + 1)
        if self.kind == "cosine":
            t = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
            return self.min_factor + (1 - self.min_factor) * 0.5 * (1 + math.cos(math.pi * t))
        if self.kind == "step":
            return self.gamma ** ((step // self.steps_per_epoch) // self.step_epochs)
        return 1.0


def build_scheduler(
    optimizer: torch.optim.Optimizer,
    name: str,
    *,
    epochs: int,
    steps_per_epoch: int,
    warmup_epochs: float = 0.0,
    min_lr_ratio: float = 0.0,
    step_epochs: int = 30,
    gamma: float = 0.1,
    sgdr_t0: int = 10,
    sgdr_tmult: int = 1,
) -> torch.optim.lr_scheduler.LRScheduler:
    """``cosine`` (with linear warm-up), ``step`` (x gamma every ``step_epochs``), ``onecycle``,
    ``sgdr`` (cosine warm restarts, first period ``sgdr_t0`` epochs, then x ``sgdr_tmult``),
    ``constant`` (after warm-up)."""
    total = epochs * steps_per_epoch
    warmup = round(warmup_epochs * steps_per_epoch)
    if name in ("cosine", "step", "constant"):
        fn = _WarmupLambda(name, total, warmup, steps_per_epoch, min_lr_ratio, step_epochs, gamma)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)
    if name == "onecycle":
        max_lr = [g["lr"] for g in optimizer.param_groups]
        pct = warmup / total if warmup else 0.3
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=max_lr, total_steps=max(2, total), pct_start=min(max(pct, 0.01), 0.99)
        )
    if name == "sgdr":
        return torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer,
            T_0=max(1, sgdr_t0 * steps_per_epoch),
            T_mult=max(1, sgdr_tmult),
            eta_min=min_lr_ratio * optimizer.param_groups[0]["lr"],
        )
    raise ValueError(f"unknown schedule {name!r}; use one of {', '.join(SCHEDULES)}")
