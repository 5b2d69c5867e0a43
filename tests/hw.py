"""One place to skip tests by hardware, optional packages and data (Lightning-style).

Use the markers::

    @requires_gpu
    @requires_tensorrt
    @requires_shared_data
    @requires_mosquitto
    @requires_tls
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
ABID_SAMPLE = SHARED_DATA / "abid-sample"
ABID_SPLITS = SHARED_DATA / "abid-splits"


def _has_cuda() -> bool:
    if importlib.util.find_spec("torch") is None:
        return False
    import torch

    return bool(torch.cuda.is_available())


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


requires_gpu = pytest.mark.skipif(not _has_cuda(), reason="needs a CUDA GPU; none is visible to torch here")
requires_tensorrt = pytest.mark.skipif(
    not _has("tensorrt"),
    reason="needs TensorRT (pip install tensorrt from NVIDIA's index, or JetPack); not installed here",
)
requires_shared_data = pytest.mark.skipif(
    not ABID_SAMPLE.is_dir(),
    reason=f"real ABID sample not found at {ABID_SAMPLE} (a fresh clone has no ../shared/data)",
)
requires_mosquitto = pytest.mark.skipif(
    shutil.which("mosquitto") is None and not Path("/usr/sbin/mosquitto").exists(),
    reason="needs the mosquitto broker (apt-get install mosquitto); .ci/run installs it",
)
requires_tls = pytest.mark.skipif(
    not (_has("ssl") and _has("cryptography")),
    reason="needs Python's ssl (OpenSSL) and the cryptography package to make test certificates "
    "(pip install cryptography)",
)
