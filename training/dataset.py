"""Count datasets: items (key, image file, count) from an ABID folder or a prepared cache, the
train/val/test split, and the torch ``Dataset`` and samplers that feed training.

Items are anything with ``key``, ``image`` (a path) and ``count`` attributes: ``contract.abid.AbidItem``
and :class:`Sample` both qualify.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Protocol

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from contract.abid import AbidError, SkipReport, iter_dataset, load_file_list, load_split, read_metadata

__all__ = [
    "BalancedSampler",
    "CountDataset",
    "Sample",
    "ShardSampler",
    "filter_counts",
    "is_synthetic",
    "items_from_cache",
    "items_from_dir",
    "load_splits_json",
    "parse_split_files",
    "read_image",
    "save_splits_json",
    "split_items",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


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
    from training.prepare import load_index

    index = load_index(cache)
    root = Path(cache)
    return [Sample(key=e.key, image=root / e.file, count=e.count, split=e.split) for e in index.items]


def filter_counts(items: Sequence[Any], max_count: int, overflow: bool) -> tuple[list[Any], int]:
    """Items the head can represent: counts 0..max_count, or any count with an overflow class."""
    if overflow:
        return list(items), 0
    kept = [it for it in items if it.count <= max_count]
    return kept, len(items) - len(kept)


# -- splits --------------------------------------------------------------------------------------


def _split_name(path: Path) -> str:
    stem = path.stem.lower()
    for name in SPLITS:
        if name in stem:
            return name
    if "valid" in stem or "dev" in stem:
        return "val"
    return "all"


def parse_split_files(specs: Sequence[str | Path]) -> dict[str, Path]:
    """``["counting_train.json", "val=my_val.json"]`` -> ``{"train": ..., "val": ...}``.

    Without ``name=``, the name comes from the file name (train/val/test); a file that names none of
    them (e.g. the capstone ``file_list.json``) is ``all``: its keys are then split at random.
    """
    out: dict[str, Path] = {}
    for spec in specs:
        text = str(spec)
        if "=" in text and text.split("=", 1)[0] in (*SPLITS, "all"):
            name, path = text.split("=", 1)
            p = Path(path)
        else:
            p = Path(text)
            name = _split_name(p)
        if name in out:
            raise ValueError(f"two split files for {name!r}: {out[name]} and {p} (use name=path)")
        out[name] = p
    if "all" in out and len(out) > 1:
        raise ValueError(
            "a key list without a split name ('all') cannot be combined with train/val/test files"
        )
    return out


def _read_split_file(path: Path) -> list[tuple[str, int]]:
    """abid_challenge ``[[index0, count], ...]``, capstone ``file_list.json``, or a plain key list."""
    data = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(data, dict):
        return load_file_list(path)
    if data and all(isinstance(k, str) for k in data):
        return [(k, -1) for k in data]
    return load_split(path)


def random_split(
    items: Sequence[Any], ratios: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> dict[str, list[Any]]:
    """Seeded random train/val/test split (stratified by count, so rare counts land in every split)."""
    if len(ratios) != 3 or any(r < 0 for r in ratios) or not math.isclose(sum(ratios), 1.0, abs_tol=1e-6):
        raise ValueError(f"split ratios must be three non-negative numbers summing to 1, got {list(ratios)}")
    rng = random.Random(seed)
    by_count: dict[int, list[Any]] = {}
    for it in sorted(items, key=lambda it: it.key):
        by_count.setdefault(it.count, []).append(it)
    out: dict[str, list[Any]] = {name: [] for name in SPLITS}
    for count in sorted(by_count):
        group = by_count[count]
        rng.shuffle(group)
        n = len(group)
        n_train = round(n * ratios[0])
        n_val = round(n * (ratios[0] + ratios[1])) - n_train
        out["train"] += group[:n_train]
        out["val"] += group[n_train : n_train + n_val]
        out["test"] += group[n_train + n_val :]
    for name in SPLITS:
        out[name].sort(key=lambda it: it.key)
    return out


def split_items(
    items: Sequence[Any],
    *,
    split_files: Optional[dict[str, Path]] = None,
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
) -> tuple[dict[str, list[Any]], str]:
    """Split items into train/val/test; returns the split and a one-line description of how.

    - ``split_files`` with train/val/test names: official splits, keys matched verbatim (keys absent
      from ``items`` are counted and logged); a missing ``test`` stays empty.
    - ``split_files={"all": file_list}``: only those keys, then a seeded random split.
    - items carrying a ``split`` (a prepared cache made with split files): that split.
    - otherwise: a seeded random split with ``ratios``.
    """
    by_key = {it.key: it for it in items}
    if split_files and "all" in split_files:
        wanted = [k for k, _ in _read_split_file(split_files["all"])]
        chosen = [by_key[k] for k in dict.fromkeys(wanted) if k in by_key]
        log.info("%s: %d of %d keys present", split_files["all"], len(chosen), len(wanted))
        return random_split(
            chosen, ratios, seed
        ), f"{split_files['all'].name} keys, random {list(ratios)} seed {seed}"
    if split_files:
        out: dict[str, list[Any]] = {name: [] for name in SPLITS}
        for name, path in split_files.items():
            entries = _read_split_file(path)
            missing = disagree = 0
            for key, count in entries:
                it = by_key.get(key)
                if it is None:
                    missing += 1
                    continue
                if count >= 0 and count != it.count:
                    disagree += 1
                out[name].append(it)
            log.info("%s split %s: %d items (%d keys not in the data)", name, path, len(out[name]), missing)
            if disagree:
                log.warning("%s: %d counts differ from the metadata (metadata used)", path, disagree)
        return out, "files: " + ", ".join(f"{n}={p.name}" for n, p in split_files.items())
    recorded = [getattr(it, "split", None) for it in items]
    if any(s in SPLITS for s in recorded):
        out = {name: [it for it in items if getattr(it, "split", None) == name] for name in SPLITS}
        unassigned = len(items) - sum(len(v) for v in out.values())
        if unassigned:
            log.info("%d cached items are in no recorded split and are left out", unassigned)
        return out, "recorded in the prepared cache"
    return random_split(items, ratios, seed), f"random {list(ratios)} seed {seed}"


def save_splits_json(path: Path, splits: dict[str, Sequence[Any]], how: str) -> None:
    payload = {"how": how, **{name: [it.key for it in splits.get(name, [])] for name in SPLITS}}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1), encoding="utf-8")
    tmp.replace(path)


def load_splits_json(path: Path, items: Sequence[Any]) -> tuple[dict[str, list[Any]], str]:
    """Re-create a saved split (RUN/splits.json) over ``items``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    by_key = {it.key: it for it in items}
    out = {name: [by_key[k] for k in data.get(name, []) if k in by_key] for name in SPLITS}
    lost = sum(len(data.get(name, [])) for name in SPLITS) - sum(len(v) for v in out.values())
    if lost:
        log.warning("%s: %d keys of the saved split are not in the data", path, lost)
    return out, str(data.get("how", f"from {path}"))


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
