"""DDP through torchrun on CPU (gloo): two ranks train and end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_torchrun_two_ranks_on_cpu_end_identical(tmp_path: Path) -> None:
    from training.data.synth import synthesize

    data = tmp_path / "synth"
    synthesize(data, 48, 5, 5, workers=1, progress=False, size=(64, 64))
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(REPO / "tests" / "training" / "_ddp_worker.py"), str(tmp_path),
        "--data", str(data), "--out", str(run), "--arch", "resnet18", "--img-size", "32",
        "--epochs", "1", "--batch-size", "8", "--workers", "0", "--device", "cpu", "--no-progress",
        "--no-tensorboard", "--optimizer", "sgd", "--lr", "0.05",
    ]  # fmt: skip
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    r0 = json.loads((tmp_path / "rank0.json").read_text())
    r1 = json.loads((tmp_path / "rank1.json").read_text())
    assert (r0["world_size"], r1["world_size"], r0["rank"], r1["rank"]) == (2, 2, 0, 1)
    assert r0["last_state_sha256"] == r1["last_state_sha256"]
    # the ranks trained (weights moved from the seeded initialisation) and report the same metrics
    assert r0["val"] == r1["val"] and r0["val"]["n"] == len(
        json.loads((run / "splits.json").read_text())["val"]
    )
    from training.model import build_model

    torch.manual_seed(0)
    init = build_model("resnet18", 6)
    trained = torch.load(run / "checkpoint.pt", weights_only=True)["model"]
    assert not torch.equal(init.state_dict()["fc.weight"], trained["fc.weight"])
    # only rank 0 wrote the run folder
    assert (run / "card.json").is_file() and (run / "metrics.csv").read_text().count("\n") == 2
