"""Images/s delivered to the model: prepared cache vs the seeds' naive pipeline, side by side.

Naive (the capstone/CS229 seeds): PIL full-size JPEG decode -> Resize((S, S)) -> ToTensor -> Normalize.
Cache: ``binwatch data prepare`` once (timed separately), then PNG/NPY decode of S x S images ->
the same eval transform (per image), or uint8 batches normalized per batch in the main process
(what ``binwatch train`` does; on a GPU that step runs on the device). All through a torch
DataLoader with the same workers and batch size, on the real ABID sample, best of ``--repeats``
full passes each (interleaved).

    python bench/data.py [--sample ../shared/data/abid-sample] [--size 224] [--workers 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))  # the checkout's packages before anything in bench/
DEFAULT_SAMPLE = REPO.parent / "shared" / "data" / "abid-sample"


class NaiveDataset(Dataset):
    def __init__(self, items, size: int) -> None:
        from torchvision import transforms as T

        self.items = items
        self.tf = T.Compose(
            [
                T.Resize((size, size)),
                T.ToTensor(),
                T.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225]),
            ]
        )

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i):
        from PIL import Image

        with Image.open(self.items[i].image) as im:
            x = self.tf(im.convert("RGB"))
        return x, self.items[i].count


def throughput(ds: Dataset, workers: int, batch_size: int, post=None) -> float:
    """Batches per second out of the loader (``post`` runs in the main process on each batch, e.g.
    training's BatchNormalizer turning uint8 batches into normalized float ones)."""
    dl = DataLoader(ds, batch_size=batch_size, num_workers=workers, shuffle=False)
    n = 0
    t0 = time.perf_counter()
    for x, _y in dl:
        if post is not None:
            x = post(x)
        n += x.shape[0]
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sample", type=Path, default=DEFAULT_SAMPLE)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--encodings", default="png,npy")
    args = ap.parse_args()
    if not args.sample.is_dir():
        raise SystemExit(f"no ABID sample at {args.sample}")

    from contract.card import InputSpec
    from training.dataset import CountDataset, items_from_cache, items_from_dir
    from training.prepare import prepare
    from training.transforms import BatchNormalizer, eval_transform

    torch.set_num_threads(1)
    items, _ = items_from_dir(args.sample)
    spec = InputSpec(height=args.size, width=args.size)
    counts = sorted({it.count for it in items})
    print(f"{len(items)} real images from {args.sample}; {args.workers} workers, batch {args.batch_size}")
    pipelines: dict[str, Dataset] = {
        "naive: PIL full decode + Resize + ToTensor + Normalize": NaiveDataset(items, args.size),
        "raw: cv2 full decode + eval_transform (no cache)": CountDataset(items, eval_transform(spec), counts),
    }
    with tempfile.TemporaryDirectory(prefix="bench-data-") as tmp:
        for enc in args.encodings.split(","):
            t0 = time.perf_counter()
            prepare(args.sample, Path(tmp) / enc, spec, encoding=enc, workers=args.workers)
            dt = time.perf_counter() - t0
            print(f"prepare ({enc}, {args.workers} processes): {len(items) / dt:.0f} images/s, once")
            cached = items_from_cache(Path(tmp) / enc)
            pipelines[f"cache ({enc}) + eval_transform"] = CountDataset(cached, eval_transform(spec), counts)
            uint8 = CountDataset(cached, eval_transform(spec, normalize=False), counts)
            pipelines[f"cache ({enc}), uint8 batches + BatchNormalizer"] = uint8
            if enc == "npy":  # what a GPU receives before normalizing on the device
                pipelines[f"cache ({enc}), uint8 batches (normalize on GPU)"] = uint8
        post = BatchNormalizer(spec)
        best = dict.fromkeys(pipelines, 0.0)
        for _ in range(args.repeats):
            for name, ds in pipelines.items():
                use = post if "BatchNormalizer" in name else None
                ips = throughput(ds, args.workers, args.batch_size, use)
                best[name] = max(best[name], ips)
    base = best[next(iter(pipelines))]
    print(f"{'pipeline':58s} {'images/s':>9s} {'vs naive':>9s}")
    for name, ips in best.items():
        print(f"{name:58s} {ips:9.0f} {ips / base:8.2f}x")


if __name__ == "__main__":
    main()
