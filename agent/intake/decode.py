"""Decode a camera's (or a client's) image bytes to a BGR uint8 frame."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["DecodeError", "decode_jpeg"]


class DecodeError(ValueError):
    """Bytes that are not a decodable image."""


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode image bytes to BGR uint8; raise :class:`DecodeError` for empty or corrupt input."""
    if not data:
        raise DecodeError("empty image (0 bytes)")
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if img is None or img.size == 0:
        raise DecodeError(f"not a decodable image ({len(data)} bytes)")
    return img
