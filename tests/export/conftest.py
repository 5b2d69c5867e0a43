"""Fixtures for export tests.

- ``trained_run``: a ResNet18 that learned something on synthetic bins. It is training's shared
  session run (``tests/fixtures_train.make_trained_run``, paid once per test session); where that
  helper is not present, export's own quick trainer below stands in.
- ``small_run``: a random-init ResNet18 run folder at a tiny input (no training, instant), for the
  error paths and the gates, so those tests never wait for training.
- ``eval_data``: 500 held-out synthetic bins (their own seed), ``calib_small``: 24 synthetic bins.
- ``quantized`` / ``bundle_dir``: the trained run after ``export onnx`` + ``export quantize``, and a
  bundle made from it (session scope: built once, treated as read-only by the tests).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from contract.card import InputSpec, ModelCard, ModelSpec, OutputSpec, TrainedFrom, save_card

EVAL_N = 500
CALIB_N = 256


def invoke(*args: object):
    """Run ``binwatch <args>`` in-process with typer's CliRunner; returns the Result."""
    from typer.testing import CliRunner

    from binwatch.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def synth(out: Path, count: int, seed: int, *, max_items: int = 5, size: tuple[int, int] = (80, 80)) -> Path:
    from training.data.synth import synthesize

    synthesize(out, count, max_items, seed=seed, size=size, progress=False, overwrite=True, workers=2)
    return out


def make_card(
    arch: str = "resnet18", size: int = 40, counts: tuple[int, ...] = (0, 1, 2, 3, 4, 5)
) -> ModelCard:
    return ModelCard(
        name="export-test",
        version=1,
        trained_from=TrainedFrom(run_id="export-test", data="synthetic"),
        model=ModelSpec(arch=arch, num_classes=len(counts)),
        input=InputSpec(height=size, width=size),
        output=OutputSpec(counts=list(counts), temperature=1.5),
    )


def save_run(run: Path, model, card: ModelCard) -> Path:
    import torch

    run.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), run / "weights.pt")
    save_card(card, run / "card.json")
    return run


def quick_train(run: Path, data: Path, epochs: int = 6, seed: int = 0) -> Path:
    """Export's stand-in trainer: ResNet18 on ``data`` (ABID layout) with agent preprocessing."""
    import torch

    from agent.surface import decode_jpeg, preprocess
    from contract.abid import iter_dataset
    from training.model import build_model

    torch.manual_seed(seed)
    card = make_card().model_copy(update={"trained_from": TrainedFrom(run_id="export-test", data=str(data))})
    items = list(iter_dataset(data))
    x = torch.from_numpy(
        np.stack([preprocess(decode_jpeg(it.image.read_bytes()), card.input) for it in items])
    )
    y = torch.tensor([card.output.class_of(it.count) for it in items])
    model = build_model(card.model.arch, card.model.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 32):
            idx = perm[i : i + 32]
            loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return save_run(run, model.eval(), card)


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    try:
        from tests.fixtures_train import make_trained_run
    except ImportError:  # training's shared fixture not present: export's own quick trainer
        base = tmp_path_factory.mktemp("export-trained")
        return quick_train(base / "run", synth(base / "synth", 600, seed=7))
    return make_trained_run(tmp_path_factory.mktemp("trained"))


@pytest.fixture(scope="session")
def train_data(trained_run: Path) -> Path:
    """The synthetic folder the trained run learned from (calibration images)."""
    from contract.card import load_card

    return Path(load_card(trained_run).trained_from.data)


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """500 held-out synthetic bins (another seed than training)."""
    return synth(tmp_path_factory.mktemp("synth-eval"), EVAL_N, seed=12345)


@pytest.fixture(scope="session")
def calib_small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return synth(tmp_path_factory.mktemp("synth-small"), 24, seed=99, size=(64, 64))


@pytest.fixture(scope="session")
def small_run_base(tmp_path_factory: pytest.TempPathFactory, calib_small: Path) -> Path:
    """Random-init ResNet18 at 32x32 with a card: no training, for error paths and gates."""
    import torch

    from training.model import build_model

    torch.manual_seed(0)
    card = make_card(size=32).model_copy(
        update={"trained_from": TrainedFrom(run_id="small", data=str(calib_small))}
    )
    model = build_model(card.model.arch, card.model.num_classes).eval()
    return save_run(tmp_path_factory.mktemp("small") / "run", model, card)


@pytest.fixture()
def run_dir(tmp_path: Path, small_run_base: Path) -> Path:
    """A fresh copy of the small run (tests may change it)."""
    dst = tmp_path / "run"
    shutil.copytree(small_run_base, dst)
    return dst


@pytest.fixture(scope="session")
def small_fp32(tmp_path_factory: pytest.TempPathFactory, small_run_base: Path) -> Path:
    """The small run's FP32 ONNX (exported once), to copy into ``run_dir`` copies."""
    from export.onnx_export import export_model, load_run_model

    model, card = load_run_model(small_run_base)
    return export_model(model, card, tmp_path_factory.mktemp("small-onnx") / "model.fp32.onnx")


@pytest.fixture(scope="session")
def quantized(tmp_path_factory: pytest.TempPathFactory, trained_run: Path, train_data: Path, eval_data: Path):
    """(copy of the trained run after `export onnx` + `export quantize --target both`, the JSON report)."""
    run = tmp_path_factory.mktemp("quantized") / "run"
    shutil.copytree(trained_run, run, ignore=shutil.ignore_patterns("checkpoint.pt", "tb"))
    res = invoke("export", "onnx", run)
    assert res.exit_code == 0, res.output
    res = invoke(
        "export", "quantize", run, "--calib", train_data, "--n", CALIB_N,
        "--eval", eval_data, "--eval-n", EVAL_N, "--json",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return run, json.loads(res.stdout)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, quantized, eval_data: Path) -> Path:
    run, _ = quantized
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    res = invoke("export", "bundle", run, "--out", out, "--golden", eval_data)
    assert res.exit_code == 0, res.output
    return out
