"""Summary statistics of an ABID-layout folder: image count, count histogram, quantities, sizes.

Image sizes come from the JPEG header (Pillow opens lazily and does not decode the pixels).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Optional

from PIL import Image
from pydantic import BaseModel, ConfigDict

from contract.abid import SkipReport, iter_dataset, list_keys

log = logging.getLogger(__name__)

UNREADABLE_IMAGE = "unreadable-image"


class Range(BaseModel):
    model_config = ConfigDict(extra="forbid")

    min: int
    max: int
    mean: float


class DatasetStats(BaseModel):
    """What ``binwatch data stats --json`` prints."""

    model_config = ConfigDict(extra="forbid")

    root: str
    images: int
    histogram: dict[int, int]  # count -> number of images, ascending
    mean_quantity: Optional[float]
    total_quantity: int
    width: Optional[Range]
    height: Optional[Range]
    max_count: Optional[int]  # the --max-count filter, if any
    over_max_count: int  # images left out by it
    skipped: dict[str, int]  # reason -> number of items left out as missing or corrupt


def _range(values: list[int]) -> Optional[Range]:
    if not values:
        return None
    return Range(min=min(values), max=max(values), mean=sum(values) / len(values))


def compute_stats(
    root: Path,
    *,
    keys: Optional[Iterable[str]] = None,
    max_count: Optional[int] = None,
    strict: bool = False,
) -> DatasetStats:
    """Statistics of the items under ``root`` (all keys, or ``keys``).

    Missing or corrupt files are skipped and counted by reason, unless ``strict``: then the first
    one raises AbidError (or ``OSError`` from Pillow for an unreadable JPEG header).
    """
    report = SkipReport()
    histogram: Counter[int] = Counter()
    widths: list[int] = []
    heights: list[int] = []
    if keys is None:
        keys = list_keys(root)
    for item in iter_dataset(root, keys=keys, max_count=max_count, skip_bad=not strict, report=report):
        size = item.size
        if size is None:
            try:
                with Image.open(item.image) as image:
                    size = image.size
            except OSError as e:  # includes UnidentifiedImageError
                if strict:
                    raise
                log.warning("skipping %s: cannot read the image header (%s)", item.image, e)
                report.add(UNREADABLE_IMAGE, item.image)
                continue
        histogram[item.count] += 1
        widths.append(size[0])
        heights.append(size[1])
    images = sum(histogram.values())
    total = sum(count * n for count, n in histogram.items())
    return DatasetStats(
        root=str(root),
        images=images,
        histogram=dict(sorted(histogram.items())),
        mean_quantity=total / images if images else None,
        total_quantity=total,
        width=_range(widths),
        height=_range(heights),
        max_count=max_count,
        over_max_count=report.over_max_count,
        skipped=report.counts(),
    )
