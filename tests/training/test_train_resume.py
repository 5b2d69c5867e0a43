"""Checkpoints and ``--resume``: a resumed run continues the same run (epoch counter, optimizer,
scheduler and RNG state), so it ends exactly where an uninterrupted run ends."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from training.train import TrainError, main

ARGS = [
    "--arch", "resnet18",
    "--img-size", "32",
    "--batch-size", "16",
    "--optimizer", "adamw",
    "--lr", "1e-3",
    "--sched", "cosine",
    "--max-count", "5",
    "--workers", "0",
    "--seed", "3",
    "--no-progress",
    "--no-tensorboard",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.data.synth import synthesize

    out = tmp_path_factory.mktemp("resume") / "synth"
    synthesize(out, 64, 5, 11, workers=1, progress=False, size=(64, 64))
    return out


def _epochs(run: Path) -> list[int]:
    with (run / "metrics.csv").open() as f:
        return [int(r["epoch"]) for r in csv.DictReader(f)]


class Interrupt(Exception):
    pass


def _interrupt_after(epoch: int):
    def cb(e: int, row: dict) -> None:
        if e == epoch:
            raise Interrupt

    return cb


@pytest.mark.slow
def test_resume_continues_the_run_exactly(tiny_data: Path, tmp_path: Path) -> None:
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    argv = [*ARGS, "--data", str(tiny_data), "--epochs", "3"]
    main([*argv, "--out", str(straight)])

    # the same run, killed after its second epoch (epoch index 1) and resumed
    with pytest.raises(Interrupt):
        main([*argv, "--out", str(resumed)], epoch_callback=_interrupt_after(1))
    ckpt = torch.load(resumed / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1 and _epochs(resumed) == [0, 1]
    steps = ckpt["optimizer"]["state"][0]["step"]
    result = main([*argv, "--out", str(resumed), "--resume"])

    assert result["epochs_run"] == 3 and _epochs(resumed) == [0, 1, 2]
    final = torch.load(resumed / "checkpoint.pt", weights_only=True)
    assert final["epoch"] == 2
    assert final["optimizer"]["state"][0]["step"] == steps * 3 / 2  # AdamW's step count carried on
    assert final["scheduler"]["last_epoch"] == ckpt["scheduler"]["last_epoch"] * 3 / 2
    reference = torch.load(straight / "checkpoint.pt", weights_only=True)
    for name, tensor in reference["model"].items():
        assert torch.allclose(final["model"][name].float(), tensor.float(), atol=1e-5), name
    assert torch.equal(
        torch.load(straight / "weights.pt", weights_only=True)["fc.weight"],
        torch.load(resumed / "weights.pt", weights_only=True)["fc.weight"],
    )


def test_resume_with_more_epochs_and_refusing_to_overwrite(tiny_data: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    argv = [*ARGS, "--data", str(tiny_data), "--out", str(run), "--sched", "constant"]
    main([*argv, "--epochs", "2"])
    first = torch.load(run / "checkpoint.pt", weights_only=True)
    assert first["epoch"] == 1
    with pytest.raises(TrainError, match="--resume"):
        main([*argv, "--epochs", "3"])
    main([*argv, "--epochs", "3", "--resume"])
    last = torch.load(run / "checkpoint.pt", weights_only=True)
    assert last["epoch"] == 2 and _epochs(run) == [0, 1, 2]
    per_epoch = first["optimizer"]["state"][0]["step"] / 2
    assert last["optimizer"]["state"][0]["step"] == per_epoch * 3
    # the split is the saved one, not re-drawn
    assert (run / "splits.json").is_file()
