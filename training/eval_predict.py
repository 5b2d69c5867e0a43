"""The prediction loop of ``binwatch eval``: the run's model over a list of images with the card's
eval transform (optionally also on their horizontal flips), giving float64 logits."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional

import numpy as np

__all__ = ["Progress", "infer", "resolve_device"]

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``, called after every batch."""


def resolve_device(name: str):
    """``auto``: CUDA when available, else the CPU; any other name as torch spells it."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def infer(
    model,
    items: Sequence[Any],
    card,
    *,
    device,
    batch_size: int = 64,
    workers: int = 0,
    tta_flip: bool = False,
    progress: Optional[Progress] = None,
    stage: str = "infer",
) -> tuple[np.ndarray, Optional[np.ndarray]]:
    """Logits of ``items`` (and of their horizontal flips with ``tta_flip``), float64 numpy."""
    import torch
    from torch.utils.data import DataLoader

    from training.dataset import CountDataset
    from training.transforms import eval_transform

    ds = CountDataset(
        items, eval_transform(card.input), counts=card.output.counts, overflow=card.output.overflow
    )
    dl = DataLoader(ds, batch_size=batch_size, shuffle=False, num_workers=workers)
    width_dim = 3 if card.input.layout == "NCHW" else 2
    model = model.to(device).eval()
    outs, flips, done = [], [], 0
    with torch.inference_mode():
        for x, _ in dl:
            x = x.to(device)
            outs.append(model(x).float().cpu())
            if tta_flip:
                flips.append(model(torch.flip(x, dims=[width_dim])).float().cpu())
            done += len(x)
            if progress is not None:
                progress(stage, done, len(ds))
    k = card.model.num_classes
    logits = torch.cat(outs).double().numpy() if outs else np.zeros((0, k))
    flipped = (torch.cat(flips).double().numpy() if flips else np.zeros((0, k))) if tta_flip else None
    return logits, flipped
