"""Frame preprocessing in numpy/OpenCV, built from the model card's ``input`` section.

This is the reference implementation: the agent runs it on every frame, export calibrates INT8
models with it, and training's eval transform is tested against it (to 1e-3) on real images.
Decoding the camera's bytes is the intake's job (:mod:`agent.intake.decode`).
"""

from __future__ import annotations

import cv2
import numpy as np

from contract.card import InputSpec

__all__ = ["preprocess", "preprocess_batch", "resize_frame"]

_INTERP = {"area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}


def resize_frame(bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """Bring a BGR uint8 frame of any size to ``spec.height x spec.width`` (still uint8 BGR)."""
    h, w = spec.height, spec.width
    if bgr.shape[0] == h and bgr.shape[1] == w:
        return bgr  # already at size (e.g. a prepared-cache image): cv2.resize would only copy it
    interp = _INTERP[spec.resize.interpolation]
    if spec.resize.method == "stretch":
        return cv2.resize(bgr, (w, h), interpolation=interp)
    # letterbox: keep aspect ratio, centre, pad with a constant
    sh, sw = bgr.shape[:2]
    scale = min(h / sh, w / sw)
    nh, nw = max(1, round(sh * scale)), max(1, round(sw * scale))
    resized = cv2.resize(bgr, (nw, nh), interpolation=interp)
    out = np.full((h, w, 3), spec.resize.pad, dtype=np.uint8)
    top, left = (h - nh) // 2, (w - nw) // 2
    out[top : top + nh, left : left + nw] = resized
    return out


def preprocess(bgr: np.ndarray, spec: InputSpec) -> np.ndarray:
    """BGR uint8 HxWx3 frame -> float32 tensor in the card's layout (CHW or HWC), normalized."""
    if bgr.ndim != 3 or bgr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 BGR image, got shape {bgr.shape}")
    img = resize_frame(bgr, spec)
    if spec.color == "RGB":
        img = img[:, :, ::-1]
    x = img.astype(np.float32) * (1.0 / 255.0)
    x -= np.asarray(spec.mean, dtype=np.float32)
    x /= np.asarray(spec.std, dtype=np.float32)
    if spec.layout == "NCHW":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x)


def preprocess_batch(frames: list[np.ndarray], spec: InputSpec) -> np.ndarray:
    return np.stack([preprocess(f, spec) for f in frames], axis=0)
