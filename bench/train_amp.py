"""Training images/s on CUDA: fp32 against bf16/fp16 autocast + channels-last, side by side.

Synthesizes bins (or uses --cache), prepares a cache at the input size, then runs the same short
training with each setting and reads the last epoch's images/s from metrics.csv.

    python bench/train_amp.py [--arch resnet50] [--size 224] [--count 2048] [--epochs 2]
"""

from __future__ import annotations

import argparse
import csv
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's packages first


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="resnet50")
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--count", type=int, default=2048)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--workers", type=int, default=8)
    ap.add_argument("--cache", type=Path, default=None)
    ap.add_argument("--compile", action="store_true", help="also time torch.compile + bf16")
    args = ap.parse_args()

    import torch

    if not torch.cuda.is_available():
        raise SystemExit("needs a CUDA GPU")
    from contract.card import InputSpec
    from training.data.synth import synthesize
    from training.prepare import prepare
    from training.train import main as train

    with tempfile.TemporaryDirectory(prefix="bench-amp-") as tmp:
        cache = args.cache
        if cache is None:
            synthesize(Path(tmp) / "synth", args.count, 5, 0, workers=args.workers, progress=False)
            cache = Path(tmp) / "cache"
            prepare(
                Path(tmp) / "synth", cache, InputSpec(height=args.size, width=args.size), workers=args.workers
            )
        settings = {
            "fp32": ["--amp", "none", "--no-channels-last"],
            "fp32 + channels-last": ["--amp", "none", "--channels-last"],
            "bf16 + channels-last": ["--amp", "bf16", "--channels-last"],
            "fp16 + channels-last": ["--amp", "fp16", "--channels-last"],
        }
        if args.compile:
            settings["bf16 + channels-last + compile"] = ["--amp", "bf16", "--channels-last", "--compile"]
        rates = {}
        for name, extra in settings.items():
            run = Path(tmp) / name.replace(" ", "").replace("+", "_")
            train(
                ["--cache", str(cache), "--out", str(run), "--arch", args.arch, "--epochs", str(args.epochs),
                 "--batch-size", str(args.batch_size), "--workers", str(args.workers), "--device", "cuda",
                 "--no-progress", "--no-tensorboard", *extra]
            )  # fmt: skip
            with (run / "metrics.csv").open() as f:
                rates[name] = float(list(csv.DictReader(f))[-1]["images_per_s"])
    print(f"{torch.cuda.get_device_name()}: {args.arch} at {args.size}x{args.size}, batch {args.batch_size}")
    base = rates["fp32"]
    for name, r in rates.items():
        print(f"{name:34s} {r:8.0f} images/s  {r / base:5.2f}x")


if __name__ == "__main__":
    main()
