"""Run by ``torchrun`` in test_train_ddp.py: trains, then writes this rank's result (with the hash
of its own last-epoch weights) to OUT/rank<r>.json."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from training.train import main

if __name__ == "__main__":
    out = Path(sys.argv[1])
    result = main(sys.argv[2:])
    rank = int(os.environ["RANK"])
    (out / f"rank{rank}.json").write_text(json.dumps(result, default=str), encoding="utf-8")
