"""Train/val/test splits: split files (abid_challenge ``counting_*.json``, the capstone
``file_list.json``, plain key lists), the seeded random split, and a run's ``splits.json``.

Items are anything with ``key`` and ``count`` attributes (and, from a prepared cache, ``split``).
Used by training (:mod:`training.loaders`), evaluation, the classical baseline and the cache
builder (:mod:`training.prepare`); imports only the stdlib and the ABID reader.
"""

from __future__ import annotations

import json
import logging
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

from contract.abid import load_file_list, load_split
from contract.files import write_atomic

__all__ = [
    "SPLITS",
    "load_splits_json",
    "parse_split_files",
    "random_split",
    "read_split_file",
    "save_splits_json",
    "split_items",
]

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


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


def read_split_file(path: Path) -> list[tuple[str, int]]:
    """``(key, count)`` pairs of a split file: abid_challenge ``[[index0, count], ...]``, capstone
    ``file_list.json``, or a plain key list (count -1: not given)."""
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


def _from_split_files(items: Sequence[Any], split_files: dict[str, Path]) -> dict[str, list[Any]]:
    """Official splits: each file's keys, matched verbatim (absent keys are counted and logged)."""
    by_key = {it.key: it for it in items}
    out: dict[str, list[Any]] = {name: [] for name in SPLITS}
    for name, path in split_files.items():
        entries = read_split_file(path)
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
    if split_files and "all" in split_files:
        by_key = {it.key: it for it in items}
        wanted = [k for k, _ in read_split_file(split_files["all"])]
        chosen = [by_key[k] for k in dict.fromkeys(wanted) if k in by_key]
        log.info("%s: %d of %d keys present", split_files["all"], len(chosen), len(wanted))
        return random_split(
            chosen, ratios, seed
        ), f"{split_files['all'].name} keys, random {list(ratios)} seed {seed}"
    if split_files:
        out = _from_split_files(items, split_files)
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
    """``RUN/splits.json``: how the split was made and the keys of each split."""
    payload = {"how": how, **{name: [it.key for it in splits.get(name, [])] for name in SPLITS}}
    write_atomic(path, json.dumps(payload, indent=1), mode=0o644)


def load_splits_json(path: Path, items: Sequence[Any]) -> tuple[dict[str, list[Any]], str]:
    """Re-create a saved split (RUN/splits.json) over ``items``."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    by_key = {it.key: it for it in items}
    out = {name: [by_key[k] for k in data.get(name, []) if k in by_key] for name in SPLITS}
    lost = sum(len(data.get(name, [])) for name in SPLITS) - sum(len(v) for v in out.values())
    if lost:
        log.warning("%s: %d keys of the saved split are not in the data", path, lost)
    return out, str(data.get("how", f"from {path}"))
