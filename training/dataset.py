"""Count datasets: items (key, image file, count) from an ABID folder or a prepared cache, and the
torch ``Dataset`` and samplers that feed training (the train/val/test split is
:mod:`training.splits`).

Items are anything with ``key``, ``image`` (a path) and ``count`` attributes: ``contract.abid.AbidItem``
and :class:`Sample` both qualify.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from contract.abid import AbidError, SkipReport, iter_dataset, read_metadata
from training.cache import load_index

__all__ = [
    "BalancedSampler",
    "CountDataset",
    "Sample",
    "ShardSampler",
    "filter_counts",
    "is_synthetic",
    "items_from_cache",
    "items_from_dir",
    "read_image",
]

log = logging.getLogger(__name__)


class Item(Protocol):
    key: str
    image: Path
    count: int


@dataclass(frozen=True)
class Sample:
    """One image and its item count (the cache's items and anything not from an ABID folder)."""

    key: str
    image: Path
    count: int
    split: Optional[str] = None


# -- reading -------------------------------------------------------------------------------------


def read_image(path: Path | str) -> np.ndarray:
    """Decode an image file (JPEG, PNG, ...; or a cached ``.npy`` array) to BGR uint8 HxWx3."""
    p = Path(path)
    if p.suffix == ".npy":
        img = np.load(p, allow_pickle=False)
    else:
        data = np.fromfile(p, dtype=np.uint8)
        img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None or img.ndim != 3 or img.shape[2] != 3:
        raise OSError(f"{p}: not a decodable colour image")
    return img


def is_synthetic(root: Path | str, items: Optional[Sequence[Any]] = None) -> bool:
    """Whether a dataset is synthetic bins: its metadata (first item) has a truthy ``synthetic`` key,
    or a prepared cache's index says so."""
    root = Path(root)
    index = root / "index.json"
    if index.is_file():
        try:
            return bool(json.loads(index.read_text(encoding="utf-8")).get("synthetic", False))
        except (OSError, json.JSONDecodeError):
            return False
    meta = None
    for it in items or ():
        meta = getattr(it, "metadata", None)
        if meta is not None:
            break
    if meta is None:
        found = sorted((root / "metadata").glob("*.json"))[:1] if (root / "metadata").is_dir() else []
        meta = found[0] if found else None
    if meta is None:
        return False
    try:
        return bool(read_metadata(meta).get("synthetic", False))
    except AbidError:
        return False


def items_from_dir(
    root: Path | str, *, keys: Optional[Sequence[str]] = None, skip_bad: bool = True
) -> tuple[list[Any], SkipReport]:
    """Every item of an ABID-layout folder (or only ``keys``), skipping missing/corrupt files (reported)."""
    report = SkipReport()
    items = list(iter_dataset(root, keys=keys, skip_bad=skip_bad, report=report))
    if report.total:
        log.warning("%s: skipped %s", root, report.summary())
    return items, report


def items_from_cache(cache: Path | str) -> list[Sample]:
    """The items of a prepared cache (``binwatch data prepare``), with the split recorded there (if any)."""
    index = load_index(cache)
    root = Path(cache)
    return [Sample(key=e.key, image=root / e.file, count=e.count, split=e.split) for e in index.items]


def filter_counts(items: Sequence[Any], max_count: int, overflow: bool) -> tuple[list[Any], int]:
    """Items the head can represent: counts 0..max_count, or any count with an overflow class."""
    if overflow:
        return list(items), 0
    kept = [it for it in items if it.count <= max_count]
    return kept, len(items) - len(kept)


# -- torch dataset and samplers ------------------------------------------------------------------


class CountDataset(Dataset):
    """``(image tensor, class index)`` pairs; class ``i`` means ``counts[i]`` items (the last one
    "that many or more" when ``overflow``).

    ``transform`` takes a BGR uint8 image (see :mod:`training.transforms`). ``count_values`` is the
    float count of every class (what RMSE and the ordinal loss use).
    """

    def __init__(
        self,
        items: Sequence[Any],
        transform: Callable[[np.ndarray], torch.Tensor],
        counts: Sequence[int] = (0, 1, 2, 3, 4, 5),
        overflow: bool = False,
    ) -> None:
        self.items = list(items)
        self.transform = transform
        self.counts = list(counts)
        self.overflow = overflow
        self.targets = [self.class_of(it.count, it.key) for it in self.items]
        self.count_values = torch.tensor(self.counts, dtype=torch.float32)

    def class_of(self, count: int, key: str = "?") -> int:
        if count in self.counts:
            return self.counts.index(count)
        if self.overflow and count > self.counts[-1]:
            return len(self.counts) - 1
        raise ValueError(
            f"item {key} has count {count}, outside the head's counts {self.counts} "
            "(raise --max-count, add --overflow, or filter the items)"
        )

    @property
    def num_classes(self) -> int:
        return len(self.counts)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(read_image(self.items[i].image)), self.targets[i]

    def class_histogram(self) -> list[int]:
        hist = [0] * len(self.counts)
        for t in self.targets:
            hist[t] += 1
        return hist


class BalancedSampler(Sampler[int]):
    """Class-balanced sampling with replacement (each class equally likely), DDP-aware.

    Every rank draws the same global sequence (seeded by ``seed + epoch``) and takes its own slice, so
    ranks see disjoint samples, like ``DistributedSampler``. Call :meth:`set_epoch` every epoch.
    """

    def __init__(
        self,
        targets: Sequence[int],
        num_classes: int,
        *,
        num_replicas: int = 1,
        rank: int = 0,
        seed: int = 0,
        num_samples: Optional[int] = None,
    ) -> None:
        hist = np.bincount(np.asarray(targets, dtype=np.int64), minlength=num_classes).astype(np.float64)
        per_class = np.divide(1.0, hist, out=np.zeros_like(hist), where=hist > 0)
        self.weights = torch.as_tensor(per_class[np.asarray(targets, dtype=np.int64)], dtype=torch.double)
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        total = num_samples or len(targets)
        self.per_rank = math.ceil(total / num_replicas)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed + self.epoch)
        idx = torch.multinomial(
            self.weights, self.per_rank * self.num_replicas, replacement=True, generator=g
        )
        return iter(idx[self.rank :: self.num_replicas].tolist())

    def __len__(self) -> int:
        return self.per_rank


class ShardSampler(Sampler[int]):
    """Rank ``r`` of ``n`` gets indices ``r, r+n, ...``: no padding, so sums over ranks are exact."""

    def __init__(self, length: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.indices = list(range(rank, length, num_replicas))

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices)

    def __len__(self) -> int:
        return len(self.indices)
