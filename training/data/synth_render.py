"""Rendering of one synthetic bin (used by ``training.data.synth``, ``binwatch data synth``).

A synthetic bin is a pale-yellow fabric bin seen from the front (perspective walls, fabric texture,
a bin label), holding items of varied shape, colour, print and size that overlap each other, with
bundles of elastic bands stretched across the opening, a lighting gradient, a warm colour cast,
blur and sensor noise. The label is the truth of what was drawn: every item keeps at least
``MIN_VISIBLE`` of its own area visible (items that would end up more hidden are re-placed), so
``EXPECTED_QUANTITY`` is the number of items one could count in the picture.

Everything random comes from the ``np.random.Generator`` passed in, so a seed fixes every byte.

numpy + opencv only (no torch), so it is light and fast enough for tests and CI.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from dataclasses import dataclass, field
from typing import Union

import cv2
import numpy as np

from training.data.synth_items import Sku, bin_label, random_sku, shape_polygon, texture_patch

log = logging.getLogger(__name__)

GENERATOR_VERSION = "1"
MIN_VISIBLE = 0.35  # every item keeps at least this fraction of its own area visible
FABRIC_BGR = (120, 190, 225)  # median of the fabric in real ABID images (hue ~20 in OpenCV's 0..180)
_PLACE_TRIES = 60

Seed = Union[int, np.random.Generator]


@dataclass
class ItemInfo:
    """Where one drawn item lies, and how much of it the picture shows."""

    sku: str
    kind: str
    bbox: tuple[int, int, int, int]  # x, y, w, h of its region of interest
    area: int  # pixels of its own (unclipped) outline
    visible: int  # pixels of it that nothing (frame, later items) covers
    mask: np.ndarray | None = field(default=None, repr=False)  # bool (h, w) in bbox, with keep_masks

    @property
    def visible_fraction(self) -> float:
        return self.visible / max(self.area, 1)


@dataclass
class BinRender:
    """A rendered bin with what was drawn (``items`` in drawing order, first = bottom)."""

    image: np.ndarray  # BGR uint8
    metadata: dict
    items: list[ItemInfo]
    opening: np.ndarray  # bool (H, W): where the bin's interior shows (outside it is fabric frame)
    skus: list[Sku] = field(default_factory=list, repr=False)  # the SKU of each placed item, in order


def _as_rng(rng_or_seed: Seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(int(rng_or_seed))


def generate_bin(rng_or_seed: Seed, n_items: int, size: tuple[int, int]) -> tuple[np.ndarray, dict]:
    """Render one bin of ``n_items`` items at ``size`` = (width, height); returns (BGR image, metadata)."""
    r = render_bin(rng_or_seed, n_items, size)
    return r.image, r.metadata


def render_bin(
    rng_or_seed: Seed,
    n_items: int,
    size: tuple[int, int],
    *,
    keep_masks: bool = False,
    skus: list[Sku] | None = None,
    min_visible: float = MIN_VISIBLE,
) -> BinRender:
    """Like ``generate_bin`` but also returns what was drawn where (for tests and debugging).

    ``skus`` (one per item) draws those products instead of new ones: another view of the same bin
    (``n_items`` is then ``len(skus)``). ``min_visible``: the least visible fraction of every item.
    """
    rng = _as_rng(rng_or_seed)
    w, h = int(size[0]), int(size[1])
    if w < 64 or h < 64:
        raise ValueError(f"bin image size {w}x{h} is too small; use at least 64x64")
    if n_items < 0:
        raise ValueError(f"n_items must be >= 0, got {n_items}")
    fabric = _fabric_colour(rng)
    opening_pts = _opening_polygon(rng, w, h)
    opening = np.zeros((h, w), np.uint8)
    cv2.fillPoly(opening, [opening_pts.astype(np.int32)], 1)
    opening_b = opening.astype(bool)

    canvas = _interior(rng, w, h, opening_pts, fabric)
    if skus is None:
        skus = _bin_skus(rng, n_items)
    items = _place_items(rng, canvas, opening_b, skus, keep_masks, min_visible)
    frame = _frame(rng, w, h, opening_pts, fabric)
    np.copyto(canvas, frame, where=~opening_b[..., None])
    _bands(rng, canvas, opening_pts)
    image = _camera(rng, canvas)

    quantities = Counter(it.sku for it in items)
    by_asin = {s.asin: s for s in skus}
    meta = {
        "BIN_FCSKU_DATA": {a: by_asin[a].metadata(q) for a, q in sorted(quantities.items())},
        "EXPECTED_QUANTITY": len(items),
    }
    if len(items) < n_items:
        log.warning("placed %d of %d items (no room left at %dx%d)", len(items), n_items, w, h)
    placed = [by_asin[it.sku] for it in items]
    return BinRender(image=image, metadata=meta, items=items, opening=opening_b, skus=placed)


# ---------------------------------------------------------------- the bin


def _fabric_colour(rng: np.random.Generator) -> np.ndarray:
    hsv = cv2.cvtColor(np.uint8([[FABRIC_BGR]]), cv2.COLOR_BGR2HSV)[0, 0].astype(np.float32)
    hsv += (rng.uniform(-1.5, 2.5), rng.uniform(-25, 10), rng.uniform(-15, 20))
    hsv = np.clip(hsv, 0, (179, 255, 255)).astype(np.uint8)
    return cv2.cvtColor(hsv[None, None], cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)


def _opening_polygon(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """Outline of the bin's front opening: straight top, slanted sides, a sagging front lip."""
    top = h * rng.uniform(0.05, 0.13)
    tilt = h * rng.uniform(-0.015, 0.015)
    xl_t, xr_t = w * rng.uniform(0.0, 0.07), w * (1 - rng.uniform(0.0, 0.07))
    xl_b, xr_b = xl_t + w * rng.uniform(-0.03, 0.03), xr_t + w * rng.uniform(-0.03, 0.03)
    lip = h * (1 - rng.uniform(0.09, 0.2))
    sag = h * rng.uniform(-0.05, 0.05)
    xs = np.linspace(xr_b, xl_b, 24)
    u = (xs - xl_b) / max(xr_b - xl_b, 1.0)
    ys = lip + sag * (1 - (2 * u - 1) ** 2) + tilt * (2 * u - 1)
    pts = [(xl_t, top - tilt), (xr_t, top + tilt), *zip(xs, ys, strict=True)]
    return np.clip(np.asarray(pts, np.float32), 0, (w - 1, h - 1))


def _interior(
    rng: np.random.Generator, w: int, h: int, opening: np.ndarray, fabric: np.ndarray
) -> np.ndarray:
    """The inside of the bin: a dark back panel framed by shaded side walls."""
    x0, y0 = opening.min(0)
    x1, y1 = opening.max(0)
    dx, dy = (x1 - x0) * rng.uniform(0.03, 0.1), (y1 - y0) * rng.uniform(0.03, 0.1)
    back = np.float32([[x0 + dx, y0 + dy], [x1 - dx, y0 + dy], [x1 - dx, y1 - dy], [x0 + dx, y1 - dy]])
    outer = np.float32([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    canvas = np.empty((h, w, 3), np.float32)
    canvas[:] = fabric * rng.uniform(0.45, 0.6)
    for i, shade in enumerate((0.42, 0.4, 0.36, 0.41)):  # top, right, bottom, left walls
        j = (i + 1) % 4
        quad = np.stack([outer[i], outer[j], back[j], back[i]]).astype(np.int32)
        cv2.fillPoly(canvas, [quad], (fabric * shade * rng.uniform(0.85, 1.1)).tolist())
    cv2.fillPoly(canvas, [back.astype(np.int32)], (fabric * rng.uniform(0.25, 0.4)).tolist())
    g = np.linspace(0.8, 1.1, h, dtype=np.float32)[:, None]
    canvas *= (_fabric_noise(rng, w, h, weave=False) * g)[..., None]
    return canvas


def _fabric_noise(rng: np.random.Generator, w: int, h: int, weave: bool = True) -> np.ndarray:
    """Multiplicative fabric texture: large soft folds plus (with ``weave``) a fine weave."""
    low = rng.uniform(0.88, 1.08, size=(max(2, h // 40), max(2, w // 40))).astype(np.float32)
    tex = cv2.resize(low, (w, h), interpolation=cv2.INTER_CUBIC)
    if not weave:
        return tex
    tex += rng.standard_normal(size=(h, w), dtype=np.float32) * np.float32(0.025)
    yy = np.arange(h, dtype=np.float32)[:, None]
    xx = np.arange(w, dtype=np.float32)[None, :]
    period = rng.uniform(2.2, 3.5)
    tex += 0.015 * np.sin(yy * (2 * np.pi / period)) + 0.015 * np.sin(xx * (2 * np.pi / period))
    return tex


def _frame(rng: np.random.Generator, w: int, h: int, opening: np.ndarray, fabric: np.ndarray) -> np.ndarray:
    """The fabric around the opening, with its rim shadow, creases and the bin labels."""
    frame = np.empty((h, w, 3), np.float32)
    frame[:] = fabric
    frame *= _fabric_noise(rng, w, h)[..., None]
    for _ in range(int(rng.integers(1, 5))):  # creases
        x = rng.uniform(0, w)
        y = (
            rng.uniform(opening[:, 1].max(), h)
            if rng.uniform() < 0.6
            else rng.uniform(0, opening[:, 1].min())
        )
        p1 = (int(x + rng.uniform(-40, 40)), int(y + rng.uniform(-25, 25)))
        cv2.line(frame, (int(x), int(y)), p1, (fabric * 0.88).tolist(), int(rng.integers(4, 10)), cv2.LINE_AA)
    rim = max(2, int(min(w, h) * rng.uniform(0.006, 0.02)))
    cv2.polylines(frame, [opening.astype(np.int32)], True, (fabric * 0.72).tolist(), rim * 2, cv2.LINE_AA)
    frame = cv2.blur(frame, (3, 3))
    top_y = float(opening[:2, 1].mean())
    lip_y = float(opening[2:, 1].max())
    if rng.uniform() < 0.85:
        bin_label(rng, frame, w * rng.uniform(0.35, 0.65), top_y * rng.uniform(-0.4, 0.35), w, h)
    if rng.uniform() < 0.85:
        bin_label(rng, frame, w * rng.uniform(0.3, 0.7), lip_y + (h - lip_y) * rng.uniform(0.15, 0.5), w, h)
    return frame


# ---------------------------------------------------------------- the items


def _bin_skus(rng: np.random.Generator, n_items: int) -> list[Sku]:
    """One SKU per item, drawn from a few distinct products (real bins often hold several units of one)."""
    if n_items == 0:
        return []
    k = int(min(n_items, rng.choice([1, 1, 2, 2, 3, 4, 5])))
    products = [random_sku(rng) for _ in range(k)]
    extra = rng.multinomial(n_items - k, np.ones(k) / k) if n_items > k else np.zeros(k, int)
    units = [p for p, e in zip(products, extra, strict=True) for _ in range(1 + int(e))]
    return [units[i] for i in rng.permutation(len(units))]


def _place_items(
    rng: np.random.Generator,
    canvas: np.ndarray,
    opening: np.ndarray,
    skus: list[Sku],
    keep_masks: bool,
    min_visible: float = MIN_VISIBLE,
) -> list[ItemInfo]:
    """Draw the items bottom to top; each placement must leave every item >= ``min_visible`` visible."""
    h, w = opening.shape
    ys, xs = np.nonzero(opening)
    ox0, ox1, oy0, oy1 = xs.min(), xs.max(), ys.min(), ys.max()
    base = math.sqrt(float(opening.sum())) / max(1, len(skus)) ** 0.5
    min_px = max(40, int(0.0012 * w * h))
    owner = np.full((h, w), -1, np.int32)
    items: list[ItemInfo] = []
    for sku in skus:
        for attempt in range(_PLACE_TRIES):
            side = base * sku.scale * rng.uniform(0.5, 0.95) * 0.93 ** (attempt // 2)
            side = max(side, 12.0)
            pw = max(6, int(side / math.sqrt(sku.aspect)))
            ph = max(6, int(side * math.sqrt(sku.aspect)))
            cx = rng.uniform(ox0, ox1)
            cy = oy0 + (oy1 - oy0) * (0.15 + 0.85 * rng.beta(1.8, 1.1))
            hom = _pose(rng, pw, ph, cx, cy)
            poly = cv2.perspectiveTransform(shape_polygon(sku, pw, ph, rng)[None], hom)[0]
            x0, y0 = np.floor(poly.min(0)).astype(int)
            x1, y1 = np.ceil(poly.max(0)).astype(int) + 1
            local = np.zeros((y1 - y0, x1 - x0), np.uint8)
            cv2.fillPoly(local, [np.round(poly - (x0, y0)).astype(np.int32)], 1)
            area = int(local.sum())
            # Clip the region of interest to the image.
            cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
            if area < min_px or cx1 <= cx0 or cy1 <= cy0:
                continue
            m = local[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0].astype(bool)
            mine = m & opening[cy0:cy1, cx0:cx1]
            visible = int(mine.sum())
            if visible < max(min_px, min_visible * area):
                continue
            roi = owner[cy0:cy1, cx0:cx1]
            lost = np.bincount(roi[mine] + 1, minlength=len(items) + 1)[1:]
            if any(it.visible - lost[j] < max(min_px, min_visible * it.area) for j, it in enumerate(items)):
                continue
            for j, it in enumerate(items):
                it.visible -= int(lost[j])
            roi[mine] = len(items)
            _paint(rng, canvas, sku, pw, ph, hom, poly, (cx0, cy0, cx1, cy1), m)
            items.append(
                ItemInfo(
                    sku=sku.asin,
                    kind=sku.kind,
                    bbox=(cx0, cy0, cx1 - cx0, cy1 - cy0),
                    area=area,
                    visible=visible,
                    mask=m.copy() if keep_masks else None,
                )
            )
            break
    return items


def _pose(rng: np.random.Generator, pw: int, ph: int, cx: float, cy: float) -> np.ndarray:
    """Homography from the upright patch to its place: rotation plus a little perspective."""
    angle = rng.normal(0, 0.3) if rng.uniform() < 0.75 else rng.uniform(0, math.pi)
    c, s = math.cos(angle), math.sin(angle)
    src = np.float32([[0, 0], [pw, 0], [pw, ph], [0, ph]])
    centred = src - (pw / 2, ph / 2)
    dst = centred @ np.float32([[c, s], [-s, c]]) + (cx, cy)
    dst += rng.uniform(-0.06, 0.06, size=(4, 2)).astype(np.float32) * max(pw, ph)
    return cv2.getPerspectiveTransform(src, dst.astype(np.float32))


def _paint(
    rng: np.random.Generator,
    canvas: np.ndarray,
    sku: Sku,
    pw: int,
    ph: int,
    hom: np.ndarray,
    poly: np.ndarray,
    box: tuple[int, int, int, int],
    mask: np.ndarray,
) -> None:
    """Soft contact shadow, the warped artwork inside the outline, a darker edge."""
    x0, y0, x1, y1 = box
    h, w = canvas.shape[:2]
    pad = max(3, int(0.08 * max(x1 - x0, y1 - y0)))
    sx0, sy0, sx1, sy1 = max(x0 - pad, 0), max(y0 - pad, 0), min(x1 + pad, w), min(y1 + pad, h)
    shadow = np.zeros((sy1 - sy0, sx1 - sx0), np.float32)
    off = (pad // 3, pad // 2)
    cv2.fillPoly(shadow, [np.round(poly - (sx0 - off[0], sy0 - off[1])).astype(np.int32)], 1.0)
    k = pad | 1
    shadow = cv2.blur(shadow, (k, k))
    canvas[sy0:sy1, sx0:sx1] *= (1 - rng.uniform(0.3, 0.55) * shadow)[..., None]

    patch = texture_patch(sku, pw, ph, rng)
    to_roi = np.float64([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]]) @ hom
    warped = cv2.warpPerspective(
        patch, to_roi, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
    )
    region = canvas[y0:y1, x0:x1]
    region[mask] = warped[mask]
    edge = (np.asarray(sku.colour, np.float32) * 0.45).tolist()
    cv2.polylines(canvas, [np.round(poly).astype(np.int32)], True, edge, 1, cv2.LINE_AA)


# ---------------------------------------------------------------- bands and camera


def _bands(rng: np.random.Generator, canvas: np.ndarray, opening: np.ndarray) -> None:
    """Elastic bands across the opening: bundles of thin pale strings, now and then a grey strap."""
    h, w = canvas.shape[:2]
    top, bottom = float(opening[:2, 1].mean()), float(opening[2:, 1].min())
    n = int(rng.choice([1, 2, 2, 3, 3]))
    colour = np.zeros((h, w, 3), np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    xs = np.linspace(-5, w + 5, 20)
    u = xs / w * 2 - 1
    for b in range(n):
        yc = top + (bottom - top) * (b + rng.uniform(0.25, 0.75)) / n
        sag, tilt = h * rng.uniform(-0.025, 0.025), h * rng.uniform(-0.012, 0.012)
        curve = yc + sag * (1 - u**2) + tilt * u
        if rng.uniform() < 0.2:  # a flat strap
            thick = max(3, int(h * rng.uniform(0.02, 0.05)))
            grey = int(rng.integers(50, 130))
            pts = np.stack([xs, curve], 1).astype(np.int32)
            cv2.polylines(colour, [pts], False, (grey, grey, grey + 5), thick, cv2.LINE_AA)
            cv2.polylines(alpha, [pts], False, int(rng.integers(170, 230)), thick, cv2.LINE_AA)
            continue
        lines = int(rng.integers(12, 36))
        spacing = max(1.5, h / 300 * rng.uniform(1.8, 3.4))
        for j in range(lines):
            off = (j - lines / 2) * spacing + rng.normal(0, spacing * 0.2)
            pts = np.stack([xs, curve + off + rng.normal(0, 0.5) * u], 1)
            tint = np.clip(rng.uniform(210, 250) + rng.normal(0, 12, size=3), 0, 255)
            cv2.polylines(colour, [np.round(pts).astype(np.int32)], False, tint.tolist(), 1, cv2.LINE_AA)
            cv2.polylines(
                alpha, [np.round(pts).astype(np.int32)], False, int(rng.integers(110, 220)), 1, cv2.LINE_AA
            )
    rows = np.flatnonzero(alpha.any(axis=1))
    if rows.size == 0:
        return
    band = slice(int(rows[0]), int(rows[-1]) + 1)  # blend only the rows the bands cross
    a = alpha[band].astype(np.float32)[..., None] * np.float32(1 / 255)
    canvas[band] *= 1 - a
    canvas[band] += colour[band].astype(np.float32) * a


def _camera(rng: np.random.Generator, canvas: np.ndarray) -> np.ndarray:
    """Lighting gradient and vignette, warm cast, low contrast, blur, sensor noise -> uint8."""
    h, w = canvas.shape[:2]
    gx, gy, vig = rng.uniform(-0.15, 0.15), rng.uniform(-0.12, 0.12), rng.uniform(0.0, 0.25)
    x = np.linspace(-1, 1, w, dtype=np.float32)[None, :]
    y = np.linspace(-1, 1, h, dtype=np.float32)[:, None]
    gain = rng.uniform(0.95, 1.12) * (1 + gx * x + gy * y - vig * (x**2 + y**2) / 2)
    c = rng.uniform(0.72, 0.92)  # contrast, pulled towards a warm grey
    tint = np.float32([rng.uniform(0.9, 1.0), rng.uniform(0.97, 1.01), rng.uniform(1.0, 1.04)]) * np.float32(
        c
    )
    canvas *= gain[..., None] * tint
    canvas += (1 - c) * np.float32([110, 135, 160])
    sigma = rng.uniform(0.4, 1.3) if rng.uniform() < 0.8 else rng.uniform(1.3, 2.4)
    canvas = cv2.GaussianBlur(canvas, (0, 0), sigma)
    noise = rng.standard_normal(size=(h, w), dtype=np.float32) * np.float32(rng.uniform(1.5, 4.5))
    canvas += (noise + 0.5)[..., None]  # luminance noise; +0.5 rounds on the cast below
    return np.clip(canvas, 0, 255).astype(np.uint8)
