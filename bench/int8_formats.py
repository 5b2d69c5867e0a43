"""Which INT8 formulation ONNX Runtime runs fastest on this CPU, against ORT FP32 in the same run.

The bundle's CPU model is Q/DQ, U8S8 (unsigned activations, signed symmetric weights), per-channel
weights (``export.quantize.quant_settings("cpu")``). This script quantizes one random-init network
several other ways and times them side by side at batch 1, interleaved round by round, so the choice
rests on a measurement on the machine at hand:

- ``qdq-u8s8-pc``   the shipped CPU model
- ``qop-u8s8-pc``   the same in QOperator form (QLinearConv nodes written out)
- ``qdq-u8s8-pt``   per-tensor weights
- ``qdq-u8s8-rr``   reduce_range (7-bit weights: no ``vpmaddubsw`` saturation on AVX2 without VNNI)
- ``qdq-u8u8-pc``   unsigned weights
- ``qdq-s8s8-pc``   signed activations (the TensorRT-style signedness, with output Q/DQ)

    python bench/int8_formats.py                     # resnet18 at 224, 2 threads
    python bench/int8_formats.py --arch resnet50 --rounds 7

Ratios are ORT FP32 time / variant time (>1 = faster). ``bench/infer.py`` prints the CPU's INT8
instruction set; without VNNI the peak INT8:FP32 multiply-accumulate rate is about 2x.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.infer import _card, _cpu_name, _RandomReader, cpu_int8_isa

SETTLE_S = 0.25  # pause at each switch so the previous session's spinning threads park


def variants() -> dict[str, dict[str, Any]]:
    from onnxruntime.quantization import QuantFormat, QuantType

    from export.quantize import quant_settings

    shipped = quant_settings("cpu")
    u8, s8 = QuantType.QUInt8, QuantType.QInt8
    return {
        "qdq-u8s8-pc": shipped,
        "qop-u8s8-pc": {**shipped, "quant_format": QuantFormat.QOperator},
        "qdq-u8s8-pt": {**shipped, "per_channel": False},
        "qdq-u8s8-rr": {**shipped, "reduce_range": True},
        "qdq-u8u8-pc": {**shipped, "weight_type": u8, "extra_options": {}},
        "qdq-s8s8-pc": {
            **shipped,
            "activation_type": s8,
            "extra_options": {"WeightSymmetric": True, "ActivationSymmetric": True},
        },
    }


def build(arch: str, size: int, workdir: Path, calib_n: int, names: list[str]) -> dict[str, Path]:
    import torchvision
    from onnxruntime.quantization import CalibrationMethod, quantize_static

    from export.onnx_export import export_model
    from export.quantize import preprocess_for_quant

    card = _card(arch, size, 6)
    model = torchvision.models.get_model(arch, weights=None, num_classes=6).eval()
    fp32 = export_model(model, card, workdir / "fp32.onnx")
    pre = preprocess_for_quant(fp32, workdir / "pre.onnx")
    table = variants()
    paths = {"ort-fp32": fp32}
    for name in names:
        out = workdir / f"{name}.onnx"
        reader = _RandomReader(calib_n, size, card.input.name)
        quantize_static(str(pre), str(out), reader, calibrate_method=CalibrationMethod.MinMax, **table[name])
        paths[name] = out
    return paths


def measure(
    paths: dict[str, Path], size: int, threads: int, rounds: int, iters: int
) -> dict[str, list[float]]:
    from export.parity import ort_session

    x = np.random.default_rng(0).standard_normal((1, 3, size, size)).astype(np.float32)
    runs = {}
    for name, p in paths.items():
        sess = ort_session(p, threads)
        inp = sess.get_inputs()[0].name
        runs[name] = lambda s=sess, n=inp: s.run(None, {n: x})
    for fn in runs.values():
        for _ in range(3):
            fn()
    lat: dict[str, list[float]] = {n: [] for n in runs}
    for _ in range(rounds):
        for n, fn in runs.items():
            time.sleep(SETTLE_S)
            fn()  # first run after a switch wakes this session's threads: not timed
            for _ in range(iters):
                t = time.perf_counter()
                fn()
                lat[n].append((time.perf_counter() - t) * 1e3)
    return lat


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="resnet18", help="torchvision classifier name")
    p.add_argument("--size", type=int, default=224)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--iters", type=int, default=6, help="batch-1 runs per variant per round")
    p.add_argument("--calib-n", type=int, default=8)
    p.add_argument("--variants", default=",".join(variants()), help="comma-separated subset")
    args = p.parse_args(argv)
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(names) - set(variants()))
    if unknown:
        p.error(f"unknown variants {unknown}; valid: {', '.join(variants())}")

    import logging

    logging.basicConfig(level=logging.ERROR)
    isa = cpu_int8_isa()
    print(
        f"CPU: {_cpu_name()}; VNNI: {', '.join(isa['vnni']) or 'none'}; {args.arch} at {args.size}, "
        f"batch 1, {args.threads} threads",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="binwatch-int8fmt-") as tmp:
        print("exporting and quantizing ...", flush=True)
        paths = build(args.arch, args.size, Path(tmp), args.calib_n, names)
        lat = measure(paths, args.size, args.threads, args.rounds, args.iters)
    base_med, base_min = statistics.median(lat["ort-fp32"]), min(lat["ort-fp32"])
    print(f"\n{'variant':<14}{'median ms':>11}{'best ms':>10}{'x fp32 (median)':>17}{'x fp32 (best)':>15}")
    for n, v in lat.items():
        med, best = statistics.median(v), min(v)
        print(f"{n:<14}{med:>11.1f}{best:>10.1f}{base_med / med:>17.2f}{base_min / best:>15.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
