"""One training epoch, evaluation, and the count loss.

Metrics follow abid_challenge: accuracy is exact-count accuracy of the argmax class; RMSE is the root
mean squared difference between the argmax class's count and the true count (an overflow class
counts as its lower bound K on both sides).
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any, Optional

import torch
import torch.nn.functional as F
from torch import nn

from training.distributed import DistInfo, all_reduce_sum

__all__ = ["CountLoss", "amp_context", "evaluate", "metrics_from_confusion", "predict", "train_one_epoch"]

log = logging.getLogger(__name__)


class CountLoss(nn.Module):
    """Cross-entropy (optionally label-smoothed) plus ``ordinal_lambda * (E[count] - y)^2``.

    The second term uses the softmax expectation of the count, so predictions far from the true count
    cost more than near misses: it aims the model at RMSE as well as accuracy.
    """

    def __init__(
        self, count_values: torch.Tensor, label_smoothing: float = 0.0, ordinal_lambda: float = 0.0
    ) -> None:
        super().__init__()
        self.register_buffer("count_values", count_values.float().clone())
        self.label_smoothing = label_smoothing
        self.ordinal_lambda = ordinal_lambda

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        loss = F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)
        if self.ordinal_lambda > 0:
            expected = logits.softmax(dim=1) @ self.count_values
            loss = loss + self.ordinal_lambda * (expected - self.count_values[target]).pow(2).mean()
        return loss


def amp_context(device: torch.device, dtype: Optional[torch.dtype]) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _to_device(
    x: torch.Tensor,
    y: torch.Tensor,
    device: torch.device,
    channels_last: bool,
    prepare: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
):
    non_blocking = device.type == "cuda"
    x = x.to(device, non_blocking=non_blocking)
    if prepare is not None:
        x = prepare(x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=non_blocking)


def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler],
    device: torch.device,
    *,
    info: Optional[DistInfo] = None,
    scaler: Optional[torch.amp.GradScaler] = None,
    amp_dtype: Optional[torch.dtype] = None,
    accum_steps: int = 1,
    channels_last: bool = False,
    max_grad_norm: Optional[float] = None,
    on_step: Optional[Callable[[int, float], None]] = None,
    profiler: Any = None,
    after_train_mode: Optional[Callable[[nn.Module], None]] = None,
    prepare_batch: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> dict[str, float]:
    """Train for one pass over ``loader``; returns loss, accuracy, images, seconds, images_per_s, lr
    (summed over all ranks). ``on_step(batch_index, loss)`` runs after every batch (progress bars).
    ``prepare_batch`` runs on each input batch once it is on the device (e.g. a
    :class:`~training.transforms.BatchNormalizer` for uint8 loaders)."""
    model.train()
    if after_train_mode is not None:
        after_train_mode(model)
    accum_steps = max(1, accum_steps)
    total = len(loader)  # type: ignore[arg-type]
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.float64, device=device)
    seen = torch.zeros((), dtype=torch.float64, device=device)
    optimizer.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    for i, (x, y) in enumerate(loader):
        x, y = _to_device(x, y, device, channels_last, prepare_batch)
        last_micro = (i + 1) % accum_steps == 0 or i + 1 == total
        sync = contextlib.nullcontext()
        if not last_micro and hasattr(model, "no_sync"):
            sync = model.no_sync()
        with sync:
            with amp_context(device, amp_dtype):
                logits = model(x)
            loss = loss_fn(logits, y)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at batch {i}: lower --lr or check the data")
            scaled = loss / accum_steps
            (scaler.scale(scaled) if scaler is not None else scaled).backward()
        if last_micro:
            _optimizer_step(model, optimizer, scheduler, scaler, max_grad_norm)
        n = y.shape[0]
        loss_sum += loss.detach().double() * n
        correct += (logits.detach().argmax(1) == y).sum().double()
        seen += n
        if profiler is not None:
            profiler.step()
        if on_step is not None:
            on_step(i, float(loss.detach()))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - t0
    stats = torch.stack([loss_sum, correct, seen])
    if info is not None:
        all_reduce_sum(stats, info)
    n = max(1.0, float(stats[2]))
    return {
        "loss": float(stats[0]) / n,
        "accuracy": float(stats[1]) / n,
        "images": float(stats[2]),
        "seconds": seconds,
        "images_per_s": float(stats[2]) / max(seconds, 1e-9),
        "lr": optimizer.param_groups[0]["lr"],
    }


def _optimizer_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Optional[torch.optim.lr_scheduler.LRScheduler],
    scaler: Optional[torch.amp.GradScaler],
    max_grad_norm: Optional[float],
) -> None:
    """One optimizer step on the accumulated gradients (unscaled and clipped first when asked),
    then zero the gradients and step the schedule."""
    if scaler is not None:
        if max_grad_norm:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        scaler.step(optimizer)
        scaler.update()
    else:
        if max_grad_norm:
            nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if scheduler is not None:
        scheduler.step()


@torch.no_grad()
def predict(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str = "cpu",
    *,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    prepare_batch: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits (float32, CPU) and class targets for every batch of ``loader``, in order."""
    device = torch.device(device)
    model.eval()
    outs, targets = [], []
    for x, y in loader:
        x, y = _to_device(x, y, device, channels_last, prepare_batch)
        with amp_context(device, amp_dtype):
            logits = model(x)
        outs.append(logits.float().cpu())
        targets.append(y.cpu())
    if not outs:
        return torch.zeros(0, 0), torch.zeros(0, dtype=torch.long)
    return torch.cat(outs), torch.cat(targets)


def metrics_from_confusion(
    confusion: torch.Tensor, count_values: torch.Tensor, loss_sum: float = float("nan")
) -> dict[str, Any]:
    """accuracy, RMSE, MAE, per-class accuracy from a confusion matrix (rows true, columns predicted)."""
    confusion = confusion.double().cpu()
    counts = count_values.double().cpu()
    n = float(confusion.sum())
    if n == 0:
        return {
            "n": 0,
            "loss": float("nan"),
            "accuracy": 0.0,
            "rmse": 0.0,
            "mae": 0.0,
            "per_class_accuracy": {},
        }
    diff = counts.view(-1, 1) - counts.view(1, -1)
    per_class = {}
    for i, c in enumerate(counts.tolist()):
        row = float(confusion[i].sum())
        if row:
            per_class[str(int(c))] = float(confusion[i, i]) / row
    return {
        "n": int(n),
        "loss": loss_sum / n,
        "accuracy": float(confusion.diag().sum()) / n,
        "rmse": math.sqrt(float((confusion * diff.pow(2)).sum()) / n),
        "mae": float((confusion * diff.abs()).sum()) / n,
        "per_class_accuracy": per_class,
        "confusion": confusion.long().tolist(),
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    device: torch.device | str = "cpu",
    *,
    count_values: Optional[torch.Tensor] = None,
    loss_fn: Optional[nn.Module] = None,
    info: Optional[DistInfo] = None,
    amp_dtype: Optional[torch.dtype] = None,
    channels_last: bool = False,
    prepare_batch: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
) -> dict[str, Any]:
    """n, loss, accuracy, rmse, mae, per_class_accuracy ({"count": acc}) and confusion (rows true).

    ``count_values`` maps class index to count (default ``0..C-1``). Under DDP give each rank a
    :class:`~training.dataset.ShardSampler` shard; the sums are reduced over ranks, so every rank
    returns the metrics of the whole set.
    """
    device = torch.device(device)
    model.eval()
    confusion: Optional[torch.Tensor] = None
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    for x, y in loader:
        x, y = _to_device(x, y, device, channels_last, prepare_batch)
        with amp_context(device, amp_dtype):
            logits = model(x)
        logits = logits.float()
        if confusion is None:
            confusion = torch.zeros(logits.shape[1], logits.shape[1], dtype=torch.float64, device=device)
        idx = y * logits.shape[1] + logits.argmax(1)
        confusion += torch.bincount(idx, minlength=confusion.numel()).view_as(confusion).double()
        if loss_fn is not None:
            loss_sum += loss_fn(logits, y).double() * y.shape[0]
    if confusion is None:  # this rank had no data; learn the class count from the model's output size
        k = len(count_values) if count_values is not None else 0
        confusion = torch.zeros(k, k, dtype=torch.float64, device=device)
    if info is not None and info.distributed:
        all_reduce_sum(confusion, info)
        all_reduce_sum(loss_sum, info)
    if count_values is None:
        count_values = torch.arange(confusion.shape[0], dtype=torch.float32)
    return metrics_from_confusion(
        confusion, count_values, float(loss_sum) if loss_fn is not None else float("nan")
    )
