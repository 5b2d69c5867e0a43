"""Training's eval transform against the agent's numpy preprocessing, on real ABID images."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from agent.surface import decode_jpeg, preprocess
from contract.card import InputSpec, ResizeSpec
from tests.hw import requires_shared_data
from training.dataset import read_image
from training.transforms import AugmentConfig, BatchNormalizer, eval_transform, resize_bgr, train_transform

SPECS = [
    InputSpec(height=224, width=224),
    InputSpec(height=96, width=128, resize=ResizeSpec(method="letterbox", interpolation="linear", pad=114)),
    InputSpec(height=64, width=64, resize=ResizeSpec(interpolation="cubic"), color="BGR"),
]


@requires_shared_data
@pytest.mark.parametrize("spec", SPECS, ids=["224-stretch-area", "96x128-letterbox-linear", "64-cubic-bgr"])
def test_eval_transform_matches_agent_preprocess(abid_sample: Path, spec: InputSpec) -> None:
    # both naming families (00121 and 121 are different images), all sizes
    files = sorted((abid_sample / "bin-images").glob("*.jpg"))
    chosen = files[::12] + [f for f in files if not f.stem.startswith("0")][:5]
    tf = eval_transform(spec)
    worst = 0.0
    for f in chosen:
        expected = preprocess(decode_jpeg(f.read_bytes()), spec)
        got = tf(read_image(f))
        assert isinstance(got, torch.Tensor) and got.dtype == torch.float32
        assert tuple(got.shape) == expected.shape == (3, spec.height, spec.width)
        worst = max(worst, float(np.abs(got.numpy() - expected).max()))
    assert worst <= 1e-3, f"eval transform differs from agent.surface.preprocess by {worst}"


def _frame(h: int = 90, w: int = 120) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def test_eval_transform_normalizes_in_rgb_order() -> None:
    spec = InputSpec(height=4, width=4)
    bgr = np.zeros((8, 8, 3), dtype=np.uint8)
    bgr[..., 2] = 255  # pure red in BGR
    x = eval_transform(spec)(bgr)
    red = (1.0 - spec.mean[0]) / spec.std[0]
    blue = (0.0 - spec.mean[2]) / spec.std[2]
    assert torch.allclose(x[0], torch.full((4, 4), red))
    assert torch.allclose(x[2], torch.full((4, 4), blue))


def test_letterbox_keeps_aspect_and_pads() -> None:
    spec = InputSpec(height=64, width=64, resize=ResizeSpec(method="letterbox", pad=7))
    out = resize_bgr(np.full((50, 100, 3), 200, dtype=np.uint8), spec)
    assert out.shape == (64, 64, 3)
    assert (out[:16] == 7).all() and (out[48:] == 7).all()  # 32 rows of image, centred
    assert (out[16:48] == 200).all()


def test_train_transform_without_augmentation_is_the_eval_transform() -> None:
    spec = InputSpec(height=32, width=48)
    none = AugmentConfig(hflip=False, degrees=0, translate=0, scale=(1.0, 1.0), brightness=0, contrast=0,
                         saturation=0, hue=0)  # fmt: skip
    frame = _frame()
    assert torch.equal(train_transform(spec, none)(frame), eval_transform(spec)(frame))


def test_train_transform_flips_without_cropping() -> None:
    spec = InputSpec(height=32, width=48)
    flip_only = AugmentConfig(hflip=True, degrees=0, translate=0, scale=(1.0, 1.0), brightness=0, contrast=0,
                              saturation=0, hue=0)  # fmt: skip
    frame = _frame()
    ref = eval_transform(spec)(frame)
    tf = train_transform(spec, flip_only)
    torch.manual_seed(0)
    outs = [tf(frame) for _ in range(16)]
    assert any(torch.equal(o, ref) for o in outs)
    assert any(torch.equal(o, ref.flip(-1)) for o in outs)
    assert all(torch.equal(o, ref) or torch.equal(o, ref.flip(-1)) for o in outs)


def test_train_transform_default_augmentation_keeps_shape_and_range() -> None:
    spec = InputSpec(height=40, width=40)
    torch.manual_seed(1)
    tf = train_transform(spec)
    frame = _frame(300, 200)
    x, y = tf(frame), tf(frame)
    assert x.shape == (3, 40, 40) and x.dtype == torch.float32
    assert not torch.equal(x, y)  # random
    lo = min((0 - m) / s for m, s in zip(spec.mean, spec.std, strict=True))
    hi = max((1 - m) / s for m, s in zip(spec.mean, spec.std, strict=True))
    assert lo - 1e-5 <= float(x.min()) and float(x.max()) <= hi + 1e-5


def test_uint8_batches_normalized_per_batch_equal_the_per_image_transform() -> None:
    spec = InputSpec(height=24, width=36)
    frames = [_frame(90, 120), _frame(50, 70)]
    per_image = torch.stack([eval_transform(spec)(f) for f in frames])
    raw = torch.stack([eval_transform(spec, normalize=False)(f) for f in frames])
    assert raw.dtype == torch.uint8
    assert torch.allclose(BatchNormalizer(spec)(raw), per_image, atol=1e-6)
