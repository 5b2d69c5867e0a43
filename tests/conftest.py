from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.broker import Mosquitto
from tests.hw import ABID_SAMPLE, requires_mosquitto


@pytest.fixture()
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A real broker on a free loopback port; ``.stop()``/``.start()`` simulate an outage."""
    if requires_mosquitto.args[0]:
        pytest.skip(requires_mosquitto.kwargs["reason"])
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def abid_sample() -> Path:
    if not ABID_SAMPLE.is_dir():
        pytest.skip(f"real ABID sample not found at {ABID_SAMPLE}")
    return ABID_SAMPLE
