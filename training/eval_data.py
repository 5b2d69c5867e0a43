"""Which images ``binwatch eval`` scores: the dataset (ABID folder or prepared cache) and the split.

- :func:`load_items` reads the data;
- :func:`select_splits` splits it: ``--split-file`` files, else the run's own ``splits.json`` (the
  same keys as in training), else, for data the run never saw, every image;
- :func:`pick_split` chooses the evaluated split (``--split``, else test, else val, else all).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

__all__ = [
    "EvalError",
    "load_items",
    "pick_split",
    "select_splits",
    "shared_items",
    "split_file_entries",
    "trained_on_synthetic",
]


class EvalError(ValueError):
    """A bad run folder, dataset or option; the message names the cause and the fix."""


def load_items(data: Path) -> tuple[list[Any], str, str, bool]:
    """(items, short dataset name, dataset id as training records it, synthetic?)."""
    from contract.abid import AbidError
    from training.cache import load_index
    from training.dataset import is_synthetic, items_from_cache, items_from_dir

    if not data.is_dir():
        raise EvalError(f"--data {data}: no such folder (an ABID-layout folder or a prepared cache)")
    if (data / "index.json").is_file():
        try:
            index = load_index(data)
        except (FileNotFoundError, ValueError) as e:
            raise EvalError(str(e)) from e
        return items_from_cache(data), data.resolve().name, index.source, index.synthetic
    try:
        items, _ = items_from_dir(data)
    except AbidError as e:
        raise EvalError(str(e)) from e
    if not items:
        raise EvalError(
            f"--data {data}: no images found (expected bin-images/<key>.jpg + metadata/<key>.json)"
        )
    return items, data.resolve().name, str(data.resolve()), is_synthetic(data, items)


def select_splits(
    items: list[Any],
    card,
    ds_id: str,
    synthetic: bool,
    *,
    run: Path,
    split_files: Sequence[str] = (),
) -> tuple[dict[str, list[Any]], str, bool]:
    """(splits, how, seen): ``seen`` is False for data the run was not trained on.

    The run's ``splits.json`` applies only to the dataset the run was trained on: ABID keys and
    synthetic keys look alike (``00001``), so matching keys alone prove nothing. The same dataset is
    the one the card names; a dataset at another path of the same kind (real or synthetic) sharing
    keys is taken for a moved copy (with a warning).
    """
    from training.splits import SPLITS, load_splits_json, parse_split_files, split_items

    if split_files:
        try:
            files = parse_split_files(split_files)
            splits, how = split_items(items, split_files=files)
        except (ValueError, OSError) as e:
            raise EvalError(f"--split-file: {e}") from e
        return splits, how, True
    saved = Path(run) / "splits.json"
    trained_on = card.trained_from.data if card.trained_from else None
    same = trained_on == ds_id
    if saved.is_file() and (same or trained_on_synthetic(card) == synthetic):
        splits, how = load_splits_json(saved, items)
        if any(splits[name] for name in SPLITS):
            if not same:
                log.warning(
                    "the run was trained on %s, not %s; using its splits.json because keys match "
                    "(a moved copy?). Pass --split-file to choose the images explicitly.",
                    trained_on,
                    ds_id,
                )
            return splits, f"the run's splits.json ({how})", True
    log.info("%s is not the data the run was trained on (%s): evaluating every image", ds_id, trained_on)
    return (
        {"train": [], "val": [], "test": [], "all": list(items)},
        "every image (data the run did not see)",
        False,
    )


def pick_split(split: Optional[str], splits: dict[str, list[Any]], data: Path) -> str:
    """The split to score: ``split`` (val | test | train | all) when given, else test, else val,
    else all."""
    if split is None:
        for name in ("test", "val"):
            if splits.get(name):
                return name
        return "all"
    if split == "all":
        return "all"
    if split not in ("val", "test", "train"):
        raise EvalError(f"--split {split!r}: choose val, test or all")
    if not splits.get(split):
        raise EvalError(
            f"--split {split}: no such images in {data} (the run's split keys are not there); "
            "use --split all, or --split-file FILE"
        )
    return split


def split_file_entries(split_files: Sequence[str], split: str) -> Optional[int]:
    """How many entries the split file of ``split`` has (None when no split file names it)."""
    if not split_files:
        return None
    from training.splits import parse_split_files

    files = parse_split_files(split_files)
    if split not in files:
        return None
    data = json.loads(Path(files[split]).read_text(encoding="utf-8"))
    return sum(len(v) for v in data.values()) if isinstance(data, dict) else len(data)


def trained_on_synthetic(card) -> bool:
    """Whether the card's metrics on the data it was trained on say that data was synthetic."""
    data = card.trained_from.data if card.trained_from else None
    return any(m.is_synthetic for m in card.metrics if data is None or m.dataset == data)


def shared_items(a: Sequence[Any], b: Sequence[Any]) -> int:
    """How many items of ``a`` are also in ``b`` (by key)."""
    keys = {it.key for it in b}
    return sum(1 for it in a if it.key in keys)
