from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures_train import make_synth_data, make_trained_run


@pytest.fixture(scope="session")
def synth_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic bins (ABID layout, counts 0..5), generated once per session."""
    return make_synth_data(tmp_path_factory.mktemp("train-session"))


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, synth_data: Path) -> Path:
    """ResNet18 trained from scratch on ``synth_data`` (CPU, about three minutes on 2 cores)."""
    return make_trained_run(synth_data.parent)
