"""Synthetic products for the bin generator: what an item (a SKU) looks like, and its ABID metadata.

A SKU is a look (shape kind, colours, print pattern, aspect, size) plus the catalogue fields that real
ABID metadata carries (asin, name, dimensions, weight). Every unit of one SKU in a bin shares the look
and differs only in pose, so bins resemble real ones, which often hold several units of one product.

numpy + opencv only; every random draw comes from the ``np.random.Generator`` passed in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import cv2
import numpy as np

log = logging.getLogger(__name__)

KINDS = ("box", "book", "bottle", "can", "ellipse", "polygon", "bag")
_KIND_P = np.array([0.30, 0.10, 0.13, 0.07, 0.10, 0.10, 0.20])

# BGR base colours of retail packaging.
PALETTE: dict[str, tuple[int, int, int]] = {
    "cardboard": (95, 140, 180),
    "kraft": (140, 180, 210),
    "white": (235, 235, 232),
    "off-white": (205, 212, 215),
    "black": (35, 35, 38),
    "grey": (80, 80, 86),
    "silver": (180, 180, 175),
    "red": (45, 40, 200),
    "blue": (170, 90, 30),
    "light blue": (225, 175, 115),
    "green": (60, 150, 60),
    "orange": (30, 130, 240),
    "pink": (170, 120, 235),
    "purple": (140, 60, 110),
    "yellow": (40, 200, 230),
    "brown": (40, 70, 110),
    "teal": (150, 140, 30),
    "navy": (90, 40, 20),
}
_COLOUR_NAMES = tuple(PALETTE)

_BRANDS = (
    "Acme",
    "Zentra",
    "Luma",
    "Orbit",
    "Kestrel",
    "Nordic",
    "Pinewood",
    "Vantage",
    "Helix",
    "Coral",
    "Brightline",
    "Summit",
    "Ferro",
    "Quill",
    "Maple & Co",
)
_PRODUCTS = {
    "box": (
        "Phone Case",
        "Spin-On Oil Filter",
        "USB-C Cable 6.6 Ft",
        "Board Game",
        "LED Bulb 4-Pack",
        "Wireless Earphones",
        "Tea Sampler",
        "Bluetooth Speaker",
    ),
    "book": ("Paperback Novel", "A5 Notebook", "Coloring Book", "Cookbook", "Wall Calendar"),
    "bottle": ("Shampoo 12 oz", "Vitamin D3 Softgels", "Hand Soap Refill", "Sunscreen SPF 50", "Olive Oil"),
    "can": ("Spray Paint", "Coffee Tin", "Tennis Balls", "Protein Powder"),
    "ellipse": ("Stress Ball", "Round Storage Tin", "Wall Clock", "Ceramic Bowl"),
    "polygon": ("Toy Figure", "Kitchen Tool Set", "Suncatcher", "Phone Stand", "Cookie Cutter"),
    "bag": ("Zip Hoodie", "Cotton Socks 6-Pack", "Charger Pouch", "Bubble Mailer", "Fleece Blanket"),
}
_ADJECTIVES = ("Premium", "Ultra", "Classic", "Compact", "Deluxe", "Eco", "Pro", "Mini", "Heavy Duty", "Soft")
_ASIN_CHARS = np.array(list("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"))
_TEXT_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Sku:
    """One synthetic product: its look and its catalogue entry."""

    asin: str
    name: str
    kind: str
    colour: tuple[int, int, int]
    accent: tuple[int, int, int]
    pattern: str
    aspect: float  # height / width of the upright item
    scale: float  # relative size factor (1.0 = typical for the bin)
    seed: int  # seeds the print (text, bars) so every unit shows the same artwork
    length_in: float
    width_in: float
    height_in: float
    weight_lb: float

    def metadata(self, quantity: int) -> dict:
        """The ``BIN_FCSKU_DATA`` entry of real ABID metadata for this SKU."""
        return {
            "asin": self.asin,
            "name": self.name,
            "normalizedName": self.name,
            "quantity": int(quantity),
            "height": {"unit": "IN", "value": self.height_in},
            "length": {"unit": "IN", "value": self.length_in},
            "width": {"unit": "IN", "value": self.width_in},
            "weight": {"unit": "pounds", "value": self.weight_lb},
        }


def random_sku(rng: np.random.Generator) -> Sku:
    """Draw a synthetic SKU (look + catalogue fields)."""
    kind = str(rng.choice(KINDS, p=_KIND_P))
    colour_name = str(rng.choice(_COLOUR_NAMES))
    colour = _jitter(rng, PALETTE[colour_name], 18)
    accent = _jitter(rng, PALETTE[str(rng.choice(_COLOUR_NAMES))], 25)
    pattern = str(rng.choice(("plain", "gradient", "stripes", "text", "label", "panel", "blobs")))
    aspect = {
        "box": rng.uniform(0.45, 1.8),
        "book": rng.choice([rng.uniform(1.25, 1.6), rng.uniform(0.12, 0.25)]),
        "bottle": rng.uniform(1.8, 3.2),
        "can": rng.uniform(0.9, 1.1),
        "ellipse": rng.uniform(0.5, 1.5),
        "polygon": rng.uniform(0.6, 1.5),
        "bag": rng.uniform(0.6, 1.4),
    }[kind]
    dims = np.sort(rng.uniform(0.4, 12.0, size=3))[::-1]
    product = rng.choice(_PRODUCTS[kind])
    name = f"{rng.choice(_BRANDS)} {rng.choice(_ADJECTIVES)} {product}, {colour_name.title()}"
    return Sku(
        asin="B0" + "".join(rng.choice(_ASIN_CHARS, size=8)),
        name=name,
        kind=kind,
        colour=colour,
        accent=accent,
        pattern=pattern,
        aspect=float(aspect),
        scale=float(rng.uniform(0.7, 1.3)),
        seed=int(rng.integers(0, 2**31 - 1)),
        length_in=float(dims[0]),
        width_in=float(dims[1]),
        height_in=float(dims[2]),
        weight_lb=float(np.round(rng.uniform(0.05, 4.0), 3)),
    )


def _jitter(rng: np.random.Generator, bgr: tuple[int, int, int], amount: int) -> tuple[int, int, int]:
    c = np.clip(np.asarray(bgr) + rng.integers(-amount, amount + 1, size=3), 0, 255)
    return (int(c[0]), int(c[1]), int(c[2]))


# ---------------------------------------------------------------- shapes


def shape_polygon(sku: Sku, pw: int, ph: int, rng: np.random.Generator) -> np.ndarray:
    """Outline of the upright item in patch coordinates, float32 (N, 2)."""
    w, h = float(pw), float(ph)
    if sku.kind in ("box", "book"):
        pts = [(0, 0), (w, 0), (w, h), (0, h)]
    elif sku.kind == "bottle":
        # Neck and cap on top, shoulders, straight body, rounded base (ellipse arc from right to left).
        nw, neck, shoulder = 0.38 * w, 0.12 * h, 0.26 * h
        x0 = (w - nw) / 2
        base = cv2.ellipse2Poly(
            (int(w / 2), int(h - w / 6)), (max(1, int(w / 2)), max(1, int(w / 6))), 0, 0, 180, 20
        )
        pts = [
            (x0, 0),
            (x0 + nw, 0),
            (x0 + nw, neck),
            (w, shoulder),
            *[tuple(p) for p in base.tolist()],
            (0, shoulder),
            (x0, neck),
        ]
    elif sku.kind in ("can", "ellipse"):
        pts = cv2.ellipse2Poly(
            (int(w / 2), int(h / 2)), (max(1, int(w / 2)), max(1, int(h / 2))), 0, 0, 360, 12
        )
    elif sku.kind == "polygon":
        local = np.random.default_rng(sku.seed)
        cand = local.uniform(0, 1, size=(9, 2)) * (w, h)
        pts = cv2.convexHull(cand.astype(np.float32)).reshape(-1, 2)
        lo, hi = pts.min(0), pts.max(0)
        pts = (pts - lo) / np.maximum(hi - lo, 1e-3) * (w, h)
    else:  # bag: a soft blob, its outline differs per unit
        t = np.linspace(0, 2 * np.pi, 28, endpoint=False)
        r = 1 + sum(rng.uniform(-0.09, 0.09) * np.cos(k * t + rng.uniform(0, 6.3)) for k in (2, 3, 5))
        pts = np.stack([0.5 + 0.5 * r * np.cos(t), 0.5 + 0.5 * r * np.sin(t)], 1)
        lo, hi = pts.min(0), pts.max(0)
        pts = (pts - lo) / (hi - lo) * (w, h)
    return np.asarray(pts, dtype=np.float32).reshape(-1, 2)


# ---------------------------------------------------------------- print and texture


def texture_patch(sku: Sku, pw: int, ph: int, rng: np.random.Generator) -> np.ndarray:
    """The item's upright artwork (ph, pw, 3) float32 BGR 0..255, with shading."""
    art = np.random.default_rng(sku.seed)  # same artwork for every unit of the SKU
    img = np.empty((ph, pw, 3), np.uint8)
    img[:] = sku.colour
    accent = sku.accent
    small = max(1, min(pw, ph))
    if sku.pattern == "gradient" or sku.kind == "bag":
        g = np.linspace(1.15, 0.75, ph, dtype=np.float32)[:, None, None]
        img = np.clip(img * g, 0, 255).astype(np.uint8)
    elif sku.pattern == "stripes":
        period = max(4, int(small * art.uniform(0.08, 0.3)))
        duty = art.uniform(0.25, 0.6)
        yy = np.arange(ph)[:, None] + (np.arange(pw)[None, :] * art.uniform(-1, 1))
        img[(yy % period) < period * duty] = accent
    elif sku.pattern == "panel":
        x0, y0 = int(pw * art.uniform(0, 0.3)), int(ph * art.uniform(0, 0.4))
        cv2.rectangle(
            img, (x0, y0), (int(pw * art.uniform(0.6, 1)), int(ph * art.uniform(0.5, 1))), accent, -1
        )
        cv2.circle(
            img,
            (int(pw * art.uniform(0.2, 0.8)), int(ph * art.uniform(0.2, 0.8))),
            max(2, int(small * art.uniform(0.1, 0.25))),
            _jitter(art, accent, 60),
            -1,
        )
    elif sku.pattern == "blobs":
        n = art.uniform(0, 1, size=(4, 4, 3)).astype(np.float32)
        n = cv2.resize(n, (pw, ph), interpolation=cv2.INTER_CUBIC)
        img = img * (0.55 + 0.45 * n[..., :1]) + np.asarray(accent, np.float32) * 0.45 * n[..., 1:2]
        img = np.clip(img, 0, 255).astype(np.uint8)
    if sku.pattern in ("text", "label", "panel") or art.uniform() < 0.35:
        _draw_text(img, art, pw, ph)
    if sku.pattern == "label" or (sku.kind in ("box", "bottle", "book") and art.uniform() < 0.4):
        _draw_label(img, art, pw, ph)
    out = img.astype(np.float32)
    out[:] = out * 0.8 + out.mean(axis=2, keepdims=True) * 0.2  # printed inks, not pure colours
    _shade(out, sku, rng, pw, ph)
    return out


def _ink(img: np.ndarray) -> tuple[int, int, int]:
    """Dark ink on light packaging, light ink on dark packaging."""
    return (25, 25, 25) if float(img.mean()) > 110 else (230, 230, 230)


def _draw_text(img: np.ndarray, art: np.random.Generator, pw: int, ph: int) -> None:
    ink = _ink(img)
    scale = float(np.clip(min(pw, ph) / 160 * art.uniform(0.5, 1.4), 0.22, 1.2))
    (_, th), _ = cv2.getTextSize("Ag", cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    step = max(th + 3, int(th * art.uniform(1.4, 2.2)))
    y = int(ph * art.uniform(0.05, 0.35)) + th
    lines = int(art.integers(1, 6))
    for _ in range(lines):
        if y >= ph - 2:
            break
        n = int(art.integers(3, 16))
        word = "".join(art.choice(list(_TEXT_CHARS), size=n))
        cv2.putText(
            img,
            word,
            (int(pw * art.uniform(0.03, 0.2)), y),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            ink,
            1 if scale < 0.8 else 2,
            cv2.LINE_AA,
        )
        y += step


def _draw_label(img: np.ndarray, art: np.random.Generator, pw: int, ph: int) -> None:
    """A white sticker with barcode bars."""
    lw, lh = int(pw * art.uniform(0.3, 0.6)), int(ph * art.uniform(0.15, 0.35))
    if lw < 6 or lh < 5:
        return
    x0, y0 = int((pw - lw) * art.uniform()), int((ph - lh) * art.uniform())
    img[y0 : y0 + lh, x0 : x0 + lw] = (238, 238, 236)
    bars = art.integers(0, 2, size=max(8, lw // 2)).astype(bool)
    widths = np.repeat(bars, 2)[: lw - 4]
    yb = y0 + max(1, lh // 5)
    img[yb : y0 + lh - max(1, lh // 6), x0 + 2 : x0 + 2 + len(widths)][:, widths] = (20, 20, 20)


def _shade(img: np.ndarray, sku: Sku, rng: np.random.Generator, pw: int, ph: int) -> None:
    """Per-unit lighting: cylinder highlights for round things, faces and folds for boxes and bags."""
    if sku.kind in ("bottle", "can"):
        x = np.linspace(-1, 1, pw, dtype=np.float32)
        prof = 0.7 + 0.45 * np.sqrt(np.clip(1 - x**2, 0, 1)) + 0.35 * np.exp(-(((x - 0.35) / 0.12) ** 2))
        if sku.kind == "can":
            y = np.linspace(-1, 1, ph, dtype=np.float32)[:, None]
            r = np.sqrt(x[None, :] ** 2 + y**2)
            prof2 = 0.75 + 0.3 * (np.abs(r - 0.85) > 0.07) + 0.25 * np.exp(-(((r - 0.4) / 0.15) ** 2))
            img *= prof2[..., None]
        else:
            img *= prof[None, :, None]
            cv2.rectangle(
                img,
                (int(pw * 0.31), 0),
                (int(pw * 0.69), max(1, int(ph * 0.08))),
                _jitter(rng, sku.accent, 30),
                -1,
            )
    elif sku.kind in ("box", "book"):
        side = int(min(pw, ph) * rng.uniform(0.08, 0.2))
        if side > 1:
            if rng.uniform() < 0.5:
                img[:, -side:] *= 0.68
            else:
                img[-side:, :] *= 0.72
    elif sku.kind == "bag":
        # Translucent plastic: bright specular streaks and soft folds.
        streaks = np.zeros((ph, pw), np.float32)
        for _ in range(int(rng.integers(2, 7))):
            p0 = (int(rng.uniform(0, pw)), int(rng.uniform(0, ph)))
            p1 = (int(rng.uniform(0, pw)), int(rng.uniform(0, ph)))
            cv2.line(streaks, p0, p1, float(rng.uniform(0.3, 1.0)), max(1, int(min(pw, ph) * 0.04)))
        k = max(3, (min(pw, ph) // 10) | 1)
        streaks = cv2.blur(streaks, (k, k))
        img += 120 * streaks[..., None]
        img[:] = img * 0.75 + 60
    # One directional light per unit.
    a, b = rng.uniform(-0.25, 0.25, size=2)
    gx = np.linspace(-a, a, pw, dtype=np.float32)[None, :]
    gy = np.linspace(-b, b, ph, dtype=np.float32)[:, None]
    img *= (1.0 + gx + gy)[..., None]
    np.clip(img, 0, 255, out=img)


def bin_label(rng: np.random.Generator, img: np.ndarray, cx: float, y: float, w: int, h: int) -> None:
    """A bin sticker: coloured card with the bin's name (like "3D"), an up arrow, a QR-like code."""
    lw = int(w * rng.uniform(0.22, 0.34))
    lh = max(12, int(lw * rng.uniform(0.25, 0.36)))
    card = np.empty((lh, lw, 3), np.uint8)
    card[:] = [(245, 245, 245), (240, 215, 175), (205, 190, 245), (95, 45, 50)][int(rng.integers(0, 4))]
    pad = max(2, lh // 8)
    cv2.rectangle(card, (pad, pad), (int(lw * 0.55), lh - pad), (248, 248, 248), -1)
    name = f"{rng.integers(1, 6)}{'ABCDEFGH'[int(rng.integers(0, 8))]}"
    scale = (lh - 2 * pad) / 26
    thick = max(1, int(scale * 2))
    cv2.putText(
        card, name, (pad * 3, lh - 2 * pad), cv2.FONT_HERSHEY_DUPLEX, scale, (20, 20, 20), thick, cv2.LINE_AA
    )
    ax = int(lw * 0.45)
    cv2.arrowedLine(card, (ax, lh - 2 * pad), (ax, 2 * pad), (20, 20, 20), thick, cv2.LINE_AA, tipLength=0.4)
    q = lh - 2 * pad
    code = (rng.integers(0, 2, size=(11, 11)) * 230 + 15).astype(np.uint8)
    card[pad : pad + q, lw - pad - q : lw - pad] = cv2.resize(code, (q, q), interpolation=cv2.INTER_NEAREST)[
        ..., None
    ]
    x0, y0 = int(cx - lw / 2), int(y)
    xa, ya, xb, yb = max(x0, 0), max(y0, 0), min(x0 + lw, w), min(y0 + lh, h)
    if xb > xa and yb > ya:
        img[ya:yb, xa:xb] = card[ya - y0 : yb - y0, xa - x0 : xb - x0]
