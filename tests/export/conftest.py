"""Fixtures for export tests: a small trained run folder on synthetic bins, built once per session.

``export_run`` is export's own fixture (independent of training's pipeline timing): a torchvision
ResNet18 trained for a few quick epochs on synthetic bins (``training.data.synth``), saved the way
training saves a run (``weights.pt`` state dict + ``card.json``). ``eval_data`` is a separately seeded
set of held-out synthetic bins.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from contract.card import InputSpec, ModelCard, ModelSpec, OutputSpec, TrainedFrom, save_card

SIZE = 64
COUNTS = [0, 1, 2, 3]
N_TRAIN = 320
N_EVAL = 500


def _synth(out: Path, count: int, seed: int) -> Path:
    from training.data.synth import synthesize

    synthesize(out, count, max(COUNTS), seed=seed, size=(96, 96), progress=False, overwrite=True)
    return out


def _load_xy(root: Path, card: ModelCard) -> tuple[np.ndarray, np.ndarray]:
    from agent.preprocess import decode_jpeg, preprocess
    from contract.abid import iter_dataset

    xs, ys = [], []
    for item in iter_dataset(root):
        xs.append(preprocess(decode_jpeg(item.image.read_bytes()), card.input))
        ys.append(card.output.class_of(item.count))
    return np.stack(xs), np.array(ys)


def make_card(arch: str = "resnet18") -> ModelCard:
    return ModelCard(
        name="synthetic-test",
        version=1,
        trained_from=TrainedFrom(run_id="export-test", data="synthetic"),
        model=ModelSpec(arch=arch, num_classes=len(COUNTS)),
        input=InputSpec(height=SIZE, width=SIZE),
        output=OutputSpec(counts=COUNTS, temperature=1.5),
    )


def train_run(run: Path, data: Path, epochs: int = 6, seed: int = 0) -> Path:
    """Train a ResNet18 quickly on ``data`` and save a run folder (weights.pt + card.json)."""
    import torch

    from training.model import build_model

    torch.manual_seed(seed)
    card = make_card()
    x, y = _load_xy(data, card)
    model = build_model(card.model.arch, card.model.num_classes)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y).long()
    g = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(xt), generator=g)
        for i in range(0, len(xt), 32):
            idx = perm[i : i + 32]
            xb = xt[idx]
            if torch.rand((), generator=g) < 0.5:
                xb = xb.flip(3)
            loss = torch.nn.functional.cross_entropy(model(xb), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    run.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), run / "weights.pt")
    save_card(card, run / "card.json")
    return run


@pytest.fixture(scope="session")
def synth_train(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _synth(tmp_path_factory.mktemp("synth-train"), N_TRAIN, seed=11)


@pytest.fixture(scope="session")
def eval_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """500 held-out synthetic bins (another seed than training and calibration)."""
    return _synth(tmp_path_factory.mktemp("synth-eval"), N_EVAL, seed=12345)


@pytest.fixture(scope="session")
def trained_run_base(tmp_path_factory: pytest.TempPathFactory, synth_train: Path) -> Path:
    return train_run(tmp_path_factory.mktemp("run-base") / "run", synth_train)


@pytest.fixture()
def run_dir(tmp_path: Path, trained_run_base: Path) -> Path:
    """A fresh copy of the trained run (tests may add artifacts to it)."""
    dst = tmp_path / "run"
    shutil.copytree(trained_run_base, dst)
    return dst


def invoke(*args: str):
    """Run ``binwatch <args>`` in-process with typer's CliRunner; returns the Result."""
    from typer.testing import CliRunner

    from binwatch.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="session")
def quantized(
    tmp_path_factory: pytest.TempPathFactory, trained_run_base: Path, synth_train: Path, eval_data: Path
):
    """(run folder after `export onnx` + `export quantize --target both`, the quantize JSON report)."""
    import json

    run = tmp_path_factory.mktemp("quantized") / "run"
    shutil.copytree(trained_run_base, run)
    res = invoke("export", "onnx", run, "--images", synth_train)
    assert res.exit_code == 0, res.output
    res = invoke(
        "export",
        "quantize",
        run,
        "--calib",
        synth_train,
        "--n",
        "128",
        "--eval",
        eval_data,
        "--eval-n",
        "500",
        "--json",
    )
    assert res.exit_code == 0, res.output
    return run, json.loads(res.stdout)


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory: pytest.TempPathFactory, quantized, eval_data: Path) -> Path:
    run, _ = quantized
    out = tmp_path_factory.mktemp("bundle") / "bundle"
    res = invoke("export", "bundle", run, "--out", out, "--golden", eval_data)
    assert res.exit_code == 0, res.output
    return out
