"""Bring a BGR uint8 frame to the model card's input size with OpenCV (numpy + cv2 only: no torch,
so ``binwatch data prepare``'s worker processes start fast)."""

from __future__ import annotations

import cv2
import numpy as np

from contract.card import InputSpec

__all__ = ["INTERP", "resize_bgr"]

INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def resize_bgr(bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Bring a BGR uint8 HxWx3 image to ``spec.height x spec.width`` as the card's ``resize`` says.

    ``stretch``: one ``cv2.resize`` to the target; ``letterbox``: keep the aspect ratio, centre, pad
    with ``resize.pad``. A frame already at the target size is returned as is.
    """
    if bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {bgr.shape}")
    h, w = spec.height, spec.width
    if bgr.shape[0] == h and bgr.shape[1] == w:
        return bgr
    interp = INTERP[spec.resize.interpolation]
    if spec.resize.method == "stretch":
        return cv2.resize(bgr, (w, h), interpolation=interp)
    sh, sw = bgr.shape[:2]
    scale = min(h / sh, w / sw)
    nh, nw = max(1, round(sh * scale)), max(1, round(sw * scale))
    resized = cv2.resize(bgr, (nw, nh), interpolation=interp)
    out = np.full((h, w, 3), spec.resize.pad, dtype=np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out
