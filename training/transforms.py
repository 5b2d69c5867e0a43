"""Image transforms from a model card's ``input`` section (BGR uint8 frame -> normalized CHW tensor).

The eval transform is the torch twin of the agent's numpy preprocessing (``agent.surface.preprocess``): the
frame is brought to size with ``cv2.resize`` and the same interpolation (stretch or letterbox),
converted to the card's colour order, scaled to [0, 1] and normalized with the card's mean/std. The
two agree to 1e-3 (tested on real images).

The train transform does the same resize first, then augments the small image: horizontal (and
optionally vertical) flips, a small affine jitter and colour jitter. It never crops at random: a
random resized crop cuts items out of the picture and so changes the label of a counting image.

On a prepared cache (``binwatch data prepare``) the stored images already have the input size, so the
resize step is a copy and the same transforms apply unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from contract.card import InputSpec
from training.resize import resize_bgr

__all__ = ["AugmentConfig", "BatchNormalizer", "eval_transform", "resize_bgr", "to_tensor", "train_transform"]

log = logging.getLogger(__name__)

Transform = Callable[[np.ndarray], torch.Tensor]


def to_tensor(bgr: np.ndarray, spec: InputSpec) -> torch.Tensor:
    """BGR uint8 HxWx3 (already at size) -> uint8 CHW tensor in the card's colour order."""
    img = bgr[:, :, ::-1] if spec.color == "RGB" else bgr
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


class _Normalize:
    def __init__(self, spec: InputSpec) -> None:
        self.mean = torch.tensor(spec.mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(spec.std, dtype=torch.float32).view(3, 1, 1)

    def __call__(self, chw_uint8: torch.Tensor) -> torch.Tensor:
        x = chw_uint8.to(torch.float32).mul_(1.0 / 255.0)
        return x.sub_(self.mean).div_(self.std)


class BatchNormalizer:
    """Normalize a batch of uint8 NCHW images (from transforms made with ``normalize=False``) on the
    batch's device: the same arithmetic as the per-image path, 4x less data through the loader."""

    def __init__(self, spec: InputSpec) -> None:
        self.mean = torch.tensor(spec.mean, dtype=torch.float32).view(1, 3, 1, 1)
        self.std = torch.tensor(spec.std, dtype=torch.float32).view(1, 3, 1, 1)

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        if batch.dtype != torch.uint8:
            return batch  # already normalized
        if self.mean.device != batch.device:
            self.mean, self.std = self.mean.to(batch.device), self.std.to(batch.device)
        x = batch.to(torch.float32).mul_(1.0 / 255.0)
        return x.sub_(self.mean).div_(self.std)


def _finish(x: torch.Tensor, spec: InputSpec, normalize: _Normalize | None) -> torch.Tensor:
    if normalize is not None:
        x = normalize(x)
    if spec.layout == "NHWC":
        x = x.permute(1, 2, 0).contiguous()
    return x


class _EvalTransform:
    """Picklable (DataLoader workers) eval transform."""

    def __init__(self, spec: InputSpec, normalize: bool = True) -> None:
        self.spec = spec
        self.normalize = _Normalize(spec) if normalize else None

    def __call__(self, bgr: np.ndarray) -> torch.Tensor:
        return _finish(to_tensor(resize_bgr(bgr, self.spec), self.spec), self.spec, self.normalize)


def eval_transform(input_spec: InputSpec, normalize: bool = True) -> Transform:
    """BGR uint8 frame of any size -> float32 tensor (CHW for NCHW cards), as the agent computes it.

    ``normalize=False`` stops before the float conversion and returns the uint8 CHW image; batches of
    those go through :class:`BatchNormalizer` (what training does: less to copy between processes).
    """
    return _EvalTransform(input_spec, normalize)


@dataclass(frozen=True)
class AugmentConfig:
    """Training augmentation that keeps every item in view (so the count label stays true)."""

    hflip: bool = True
    vflip: bool = False
    degrees: float = 5.0
    translate: float = 0.03
    scale: tuple[float, float] = (0.95, 1.05)
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.02


class _TrainTransform:
    def __init__(self, spec: InputSpec, aug: AugmentConfig, normalize: bool = True) -> None:
        from torchvision.transforms import v2

        self.spec = spec
        self.normalize = _Normalize(spec) if normalize else None
        ops: list[torch.nn.Module] = []
        if aug.hflip:
            ops.append(v2.RandomHorizontalFlip())
        if aug.vflip:
            ops.append(v2.RandomVerticalFlip())
        if aug.degrees or aug.translate or aug.scale != (1.0, 1.0):
            fill = spec.resize.pad if spec.resize.method == "letterbox" else 0
            ops.append(
                v2.RandomAffine(
                    degrees=aug.degrees,
                    translate=(aug.translate, aug.translate) if aug.translate else None,
                    scale=aug.scale if aug.scale != (1.0, 1.0) else None,
                    interpolation=v2.InterpolationMode.BILINEAR,
                    fill=fill,
                )
            )
        if aug.brightness or aug.contrast or aug.saturation or aug.hue:
            ops.append(
                v2.ColorJitter(
                    brightness=aug.brightness or None,
                    contrast=aug.contrast or None,
                    saturation=aug.saturation or None,
                    hue=aug.hue or None,
                )
            )
        self.augment = v2.Compose(ops) if ops else None

    def __call__(self, bgr: np.ndarray) -> torch.Tensor:
        x = to_tensor(resize_bgr(bgr, self.spec), self.spec)
        if self.augment is not None:
            x = self.augment(x)
        return _finish(x, self.spec, self.normalize)


def train_transform(
    input_spec: InputSpec, aug: AugmentConfig | None = None, normalize: bool = True
) -> Transform:
    """Resize like :func:`eval_transform`, then flips, a small affine and colour jitter (no crops).
    ``normalize=False``: uint8 output, as for :func:`eval_transform`."""
    return _TrainTransform(input_spec, aug or AugmentConfig(), normalize)
