"""Synthetic bins and a small trained run, made once per test session and shared by test folders.

``make_trained_run(tmp_dir)`` synthesizes bins, prepares a cache and trains ResNet18 from scratch on
CPU (about three minutes on 2 idle cores: synth 20 s, 7 epochs of ~22 s); later calls in the same
session return the same run folder. Use it from a conftest::

    @pytest.fixture(scope="session")
    def trained_run(tmp_path_factory):
        return make_trained_run(tmp_path_factory.mktemp("trained"))

The run folder has weights.pt, card.json (input 32x32 stretch/area, counts 0..5), splits.json (train/val
70/30), metrics.csv, result.json (what ``training.train.main`` returned);
``synth_dir(run)`` gives the ABID-layout data it was trained on.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

SYNTH_COUNT = 2000
SYNTH_SIZE = (64, 64)  # width, height of the generated images
MAX_ITEMS = 5
SEED = 7
INPUT = 32  # model input (the cache is made at this size)
EPOCHS = 7

TRAIN_ARGS = [
    "--arch", "resnet18",
    "--epochs", str(EPOCHS),
    "--batch-size", "16",
    "--optimizer", "adamw",
    "--lr", "1e-3",
    "--warmup-epochs", "0.5",
    "--max-count", str(MAX_ITEMS),
    "--split-ratios", "0.7,0.3,0",
    # light augmentation: flips and a little colour jitter learn fastest in a run this short
    "--affine-degrees", "0", "--translate", "0", "--scale-jitter", "0", "--color-jitter", "0.1",
    "--workers", "1",
    "--seed", "0",
    "--no-progress",
]  # fmt: skip

_lock = threading.Lock()
_made: dict[str, Path] = {}


def make_synth_data(tmp_dir: Path) -> Path:
    """ABID-layout synthetic bins (counts 0..5, uniform), made once per session."""
    with _lock:
        if "synth" not in _made:
            from training.data.synth import synthesize

            out = Path(tmp_dir) / "synth"
            synthesize(out, SYNTH_COUNT, MAX_ITEMS, SEED, workers=2, progress=False, size=SYNTH_SIZE)
            _made["synth"] = out
        return _made["synth"]


def make_trained_run(tmp_dir: Path) -> Path:
    """A ResNet18 run trained from scratch on :func:`make_synth_data` (through a prepared cache)."""
    data = make_synth_data(tmp_dir)
    with _lock:
        if "run" not in _made:
            from contract.card import InputSpec
            from training.prepare import prepare
            from training.train import main

            cache = Path(tmp_dir) / "cache"
            prepare(data, cache, InputSpec(height=INPUT, width=INPUT), workers=2)
            run = Path(tmp_dir) / "run"
            result = main([*TRAIN_ARGS, "--cache", str(cache), "--out", str(run)])
            (run / "result.json").write_text(json.dumps(result, indent=1, default=str), encoding="utf-8")
            _made["run"] = run
        return _made["run"]


def synth_dir(run: Path) -> Path:
    """The synthetic ABID folder a run from :func:`make_trained_run` was trained on (from its card)."""
    from contract.card import load_card

    card = load_card(run)
    assert card.trained_from is not None and card.trained_from.data
    return Path(card.trained_from.data)
