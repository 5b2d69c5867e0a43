"""Inference speed: PyTorch eager FP32 vs ONNX Runtime FP32 / INT8-cpu / INT8-tensorrt, side by side.

For each architecture (random-init weights: speed does not depend on training) the script exports
the FP32 ONNX model, quantizes it for both targets (calibrated on a few random images), then measures
on the CPU with the same thread count for every backend:

- latency at batch 1 (median and p90 milliseconds),
- throughput at batch 8 (images per second),

interleaving the backends round by round so that load from other processes hits all of them alike.
Everything is printed as ratios against PyTorch eager measured in the same run.

    python bench/infer.py                      # resnet18, resnet34, resnet50 at 224, 2 threads
    python bench/infer.py --archs resnet18 --threads 2 --rounds 7
    python bench/infer.py --json results.json

The INT8-tensorrt model is the Q/DQ model built for TensorRT; on a CPU it is expected to be no faster
than FP32 (it is listed to show why the bundle carries a separate CPU model).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SETTLE_S = 0.25
BACKENDS = ("pytorch-fp32", "ort-fp32", "ort-int8-cpu", "ort-int8-tensorrt")


def _card(arch: str, size: int, num_classes: int):
    from contract.card import InputSpec, ModelCard, ModelSpec, OutputSpec

    return ModelCard(
        name=f"bench-{arch}",
        version=1,
        model=ModelSpec(arch=arch, num_classes=num_classes),
        input=InputSpec(height=size, width=size),
        output=OutputSpec(counts=list(range(num_classes))),
    )


class _RandomReader:
    def __init__(self, n: int, size: int, name: str, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.batches = [rng.standard_normal((1, 3, size, size)).astype(np.float32) for _ in range(n)]
        self.name = name
        self.i = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.batches):
            return None
        self.i += 1
        return {self.name: self.batches[self.i - 1]}

    def rewind(self) -> None:
        self.i = 0


def prepare(arch: str, size: int, workdir: Path, calib_n: int) -> tuple[Any, dict[str, Path]]:
    """(torch model, {backend: onnx path}) for one architecture."""
    import torchvision

    from export.onnx_export import export_model
    from export.quantize import preprocess_for_quant, quantize_onnx

    card = _card(arch, size, 6)
    model = torchvision.models.get_model(arch, weights=None, num_classes=6).eval()
    fp32 = export_model(model, card, workdir / f"{arch}.fp32.onnx")
    pre = preprocess_for_quant(fp32, workdir / f"{arch}.pre.onnx")
    cache = workdir / f"{arch}.calib.json"
    paths = {"ort-fp32": fp32}
    for target, backend in (("cpu", "ort-int8-cpu"), ("tensorrt", "ort-int8-tensorrt")):
        out = workdir / f"{arch}.int8-{target}.onnx"
        quantize_onnx(
            pre, out, _RandomReader(calib_n, size, card.input.name), target, calibration_cache=cache
        )
        paths[backend] = out
    return model, paths


def runners(model: Any, paths: dict[str, Path], threads: int) -> dict[str, Callable[[np.ndarray], Any]]:
    import torch

    from export.parity import ort_session

    torch.set_num_threads(threads)

    def torch_run(x: np.ndarray) -> Any:
        with torch.inference_mode():
            return model(torch.from_numpy(x))

    out: dict[str, Callable[[np.ndarray], Any]] = {"pytorch-fp32": torch_run}
    for backend, path in paths.items():
        sess = ort_session(path, threads)
        name = sess.get_inputs()[0].name
        out[backend] = lambda x, s=sess, n=name: s.run(None, {n: x})
    return out


def measure(
    run: dict[str, Callable[[np.ndarray], Any]], size: int, rounds: int, iters1: int, iters8: int, warmup: int
) -> dict[str, dict[str, float]]:
    """Interleaved timing: every round runs each backend for a few iterations at batch 1 and 8."""
    rng = np.random.default_rng(0)
    x1 = rng.standard_normal((1, 3, size, size)).astype(np.float32)
    x8 = rng.standard_normal((8, 3, size, size)).astype(np.float32)
    lat: dict[str, list[float]] = {b: [] for b in run}
    thr: dict[str, list[float]] = {b: [] for b in run}
    for fn in run.values():
        for _ in range(warmup):
            fn(x1)
        fn(x8)
    for _ in range(rounds):
        for b, fn in run.items():
            # let the previous backend's spinning threads (ORT pool, OpenMP) park, and wake this
            # backend's threads with one untimed run, so backends do not steal each other's cores
            time.sleep(SETTLE_S)
            fn(x1)
            for _ in range(iters1):
                t = time.perf_counter()
                fn(x1)
                lat[b].append((time.perf_counter() - t) * 1e3)
            t = time.perf_counter()
            for _ in range(iters8):
                fn(x8)
            thr[b].append(8 * iters8 / (time.perf_counter() - t))
    return {
        b: {
            "b1_median_ms": statistics.median(lat[b]),
            "b1_min_ms": min(lat[b]),
            "b1_p90_ms": float(np.percentile(lat[b], 90)),
            "b8_img_per_s": statistics.median(thr[b]),
            "b8_best_img_per_s": max(thr[b]),
        }
        for b in run
    }


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_int8_isa() -> dict[str, Any]:
    """Which x86 INT8 dot-product instructions this CPU has, and what that caps.

    ONNX Runtime's MLAS picks its U8S8 kernel by CPU feature. Without VNNI (plain AVX2) one 32-lane
    INT8 multiply-accumulate step takes two multiply instructions (``vpmaddubsw`` + ``vpmaddwd``) where
    FP32 takes one FMA per 8 lanes: the peak INT8:FP32 MAC rate is about 2x, so INT8 cannot be 2.5x
    faster than FP32 there. With VNNI (``vpdpbusd``, one instruction per 32 lanes) the peak is about 4x.
    """
    flags: set[str] = set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    except OSError:
        pass
    vnni = sorted(f for f in ("avx512_vnni", "avx_vnni", "amx_int8", "avx_vnni_int8") if f in flags)
    if vnni:
        peak = 4.0
    elif "avx2" in flags:
        peak = 2.0
    else:
        peak = float("nan")  # not x86 or no /proc/cpuinfo: unknown
    return {"avx2": "avx2" in flags, "vnni": vnni, "int8_fp32_peak_ratio": peak}


def report(arch: str, res: dict[str, dict[str, float]]) -> list[str]:
    """Ratios are speed-ups (>1 = faster) against PyTorch eager and ORT FP32: from the medians, and
    from the best runs (min latency / max throughput), which load from other processes disturbs least."""
    base, ort32 = res["pytorch-fp32"], res["ort-fp32"]
    lines = [
        f"\n{arch}: batch-1 latency (ms), batch-8 throughput (img/s); speed-up = baseline time / time",
        f"{'':<20}{'--- batch 1 median ---':^30}{'--- batch 1 best ---':^30}{'--- batch 8 median ---':^22}",
        f"{'backend':<20}{'ms':>8}{'p90':>8}{'x eager':>8}{'x ort32':>8}"
        f"{'ms':>10}{'x eager':>10}{'x ort32':>10}{'img/s':>11}{'x eager':>11}",
    ]
    for b, r in res.items():
        med, best = r["b1_median_ms"], r["b1_min_ms"]
        lines.append(
            f"{b:<20}{med:>8.1f}{r['b1_p90_ms']:>8.1f}{base['b1_median_ms'] / med:>8.2f}"
            f"{ort32['b1_median_ms'] / med:>8.2f}{best:>10.1f}{base['b1_min_ms'] / best:>10.2f}"
            f"{ort32['b1_min_ms'] / best:>10.2f}{r['b8_img_per_s']:>11.1f}"
            f"{r['b8_img_per_s'] / base['b8_img_per_s']:>11.2f}"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="resnet18,resnet34,resnet50", help="comma-separated torchvision names")
    p.add_argument("--size", type=int, default=224, help="input height and width")
    p.add_argument("--threads", type=int, default=2, help="threads for every backend")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--iters1", type=int, default=6, help="batch-1 runs per backend per round")
    p.add_argument("--iters8", type=int, default=2, help="batch-8 runs per backend per round")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--calib-n", type=int, default=8, help="random calibration images")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args(argv)

    import logging

    logging.basicConfig(level=logging.WARNING)
    load0 = os.getloadavg()
    print(
        f"CPU: {_cpu_name()} ({os.cpu_count()} logical), threads={args.threads}, size={args.size}, "
        f"load average at start {load0[0]:.2f}",
        flush=True,
    )
    isa = cpu_int8_isa()
    print(
        "INT8 dot-product instructions: "
        + (", ".join(isa["vnni"]) if isa["vnni"] else "none (AVX2 only)" if isa["avx2"] else "unknown")
        + f"; peak INT8:FP32 multiply-accumulate rate about {isa['int8_fp32_peak_ratio']:.0f}x",
        flush=True,
    )
    results: dict[str, Any] = {
        "cpu": _cpu_name(),
        "isa": isa,
        "threads": args.threads,
        "size": args.size,
        "archs": {},
    }
    with tempfile.TemporaryDirectory(prefix="binwatch-bench-") as tmp:
        for arch in [a.strip() for a in args.archs.split(",") if a.strip()]:
            print(f"preparing {arch} (export + quantize) ...", flush=True)
            model, paths = prepare(arch, args.size, Path(tmp), args.calib_n)
            res = measure(
                runners(model, paths, args.threads),
                args.size,
                args.rounds,
                args.iters1,
                args.iters8,
                args.warmup,
            )
            results["archs"][arch] = res
            print("\n".join(report(arch, res)), flush=True)
            if arch == "resnet18":
                for kind, key in (("median", "b1_median_ms"), ("best", "b1_min_ms")):
                    s_eager = res["pytorch-fp32"][key] / res["ort-int8-cpu"][key]
                    s_ort = res["ort-fp32"][key] / res["ort-int8-cpu"][key]
                    ok = s_eager >= 4.0 and s_ort >= 2.5
                    print(
                        f"goal (resnet18, batch 1, {kind}): INT8-cpu {s_eager:.2f}x eager (>= 4) and "
                        f"{s_ort:.2f}x ORT FP32 (>= 2.5): {'MET' if ok else 'NOT MET'}",
                        flush=True,
                    )
                if isa["int8_fp32_peak_ratio"] < 2.5:
                    print(
                        "  (this CPU has no VNNI: its peak INT8:FP32 MAC rate is about 2x, below the 2.5x "
                        "goal; the goal needs a CPU with AVX-VNNI or AVX512-VNNI)",
                        flush=True,
                    )
    load1 = os.getloadavg()
    results["load_average"] = {"start": load0[0], "end": load1[0]}
    print(
        f"\nload average at end {load1[0]:.2f} "
        f"(above {args.threads} means other processes competed for the CPU)"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
