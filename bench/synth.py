"""Synthetic bin generator throughput on one core (``python bench/synth.py [--n 200]``).

Prints images per second of ``training.data.synth`` at the default size range (each side 320..560),
rendering + JPEG encoding in one process with OpenCV limited to one thread, and, as an in-run
baseline, the time of only JPEG-encoding a blank image of the same sizes (the floor any generator
that writes ABID JPEGs pays). The ratio says how many times that floor one synthetic bin costs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout's packages first

from training.data.synth import DEFAULT_MAX_SIZE, DEFAULT_MIN_SIZE, bin_params, generate_bin, rng_for


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images to generate")
    parser.add_argument("--max-items", type=int, default=5, help="items per bin: uniform 0..K")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    cv2.setNumThreads(1)

    params = [
        bin_params(rng_for(args.seed, i), 0, args.max_items, None, DEFAULT_MIN_SIZE, DEFAULT_MAX_SIZE)
        for i in range(args.n)
    ]
    generate_bin(rng_for(args.seed, 10**6), 3, (400, 400))  # warm-up (imports, first-call costs)

    t0 = time.perf_counter()
    nbytes = 0
    for i in range(args.n):
        rng = rng_for(args.seed, i)
        n, size = bin_params(rng, 0, args.max_items, None, DEFAULT_MIN_SIZE, DEFAULT_MAX_SIZE)
        image, _ = generate_bin(rng, n, size)
        _, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        nbytes += len(buf)
    synth_s = time.perf_counter() - t0

    blanks = [np.full((h, w, 3), (120, 190, 225), np.uint8) for _, (w, h) in params]
    t0 = time.perf_counter()
    for blank in blanks:
        cv2.imencode(".jpg", blank, [cv2.IMWRITE_JPEG_QUALITY, 90])
    base_s = time.perf_counter() - t0

    mean_px = np.mean([w * h for _, (w, h) in params])
    print(
        f"synthetic bins: {args.n} images, mean {mean_px / 1000:.0f} kpx, "
        f"max_items {args.max_items}, 1 thread"
    )
    print(
        f"  generate + encode: {args.n / synth_s:8.1f} images/s  ({1000 * synth_s / args.n:.1f} ms/image, "
        f"{nbytes / args.n / 1024:.0f} KiB/image)"
    )
    print(f"  baseline (encode a blank image only): {args.n / base_s:8.1f} images/s")
    print(f"  ratio generate / baseline time: {synth_s / base_s:.1f}x")


if __name__ == "__main__":
    main()
