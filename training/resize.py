"""Bring a BGR uint8 frame to the model card's input size (numpy + cv2 only: no torch, so
``binwatch data prepare``'s worker processes start fast).

The resize itself is the agent's (``agent.surface.resize_frame``): training, the prepared cache
and the edge share one implementation, so their preprocessing cannot drift apart.
"""

from __future__ import annotations

import numpy as np

from agent.surface import resize_frame
from contract.card import InputSpec

__all__ = ["resize_bgr"]


def resize_bgr(bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Bring a BGR uint8 HxWx3 image to ``spec.height x spec.width`` as the card's ``resize`` says.

    ``stretch``: one ``cv2.resize`` to the target; ``letterbox``: keep the aspect ratio, centre, pad
    with ``resize.pad``. A frame already at the target size is returned as is.
    """
    if bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {bgr.shape}")
    return resize_frame(bgr, spec)
