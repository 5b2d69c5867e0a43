"""A tiny progress seam: library code reports stages, the CLI draws them with rich."""

from __future__ import annotations

from collections.abc import Callable
from typing import Optional

__all__ = ["Advance", "ProgressHook", "no_progress"]

Advance = Callable[[int], None]
# hook(description, total) -> advance(n); total None means unknown length
ProgressHook = Callable[[str, Optional[int]], Advance]


def no_progress(description: str, total: Optional[int] = None) -> Advance:
    return lambda n=1: None
