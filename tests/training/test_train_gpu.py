"""CUDA only: mixed precision and channels-last training runs end to end (skipped without a GPU)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.hw import requires_gpu
from training.model import load_run
from training.train import main

pytestmark = [requires_gpu, pytest.mark.gpu]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synth import synthesize

    out = tmp_path_factory.mktemp("gpu") / "synth"
    synthesize(out, 96, 5, 2, workers=2, progress=False, size=(96, 96))
    return out


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_channels_last_training_on_cuda(data: Path, tmp_path: Path, amp: str) -> None:
    import torch

    if amp == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    run = tmp_path / amp
    result = main(
        ["--data", str(data), "--out", str(run), "--arch", "resnet18", "--img-size", "64", "--epochs", "2",
         "--batch-size", "16", "--workers", "2", "--device", "cuda", "--amp", amp, "--channels-last",
         "--no-progress"]
    )  # fmt: skip
    assert result["epochs_run"] == 2 and result["val"]["n"] > 0
    model, card = load_run(run)  # fp32 state dict, loads on CPU
    assert next(model.parameters()).dtype == torch.float32 and card.model.arch == "resnet18"
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    assert bool(ckpt["scaler"]) == (amp == "fp16")
