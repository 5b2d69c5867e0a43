"""Agent throughput and latency: the whole pipeline vs the bare backend, side by side in one run.

    python bench/agent_pipeline.py               # ResNet18 (untrained), INT8 CPU at 224x224, 200 bins
    python bench/agent_pipeline.py --precision fp32 --count 40 --rounds 1 --paced-frames 20 --json
    python bench/agent_pipeline.py --model BUNDLE --replay DIR --threads 2 --batch 4 --json

1. bare backend: the same frames, decoded and preprocessed once up front, then only
   ``backend.infer`` on batches of ``--batch`` (frames/s);
2. pipeline: ``agent.runtime.Runtime`` replaying the folder as fast as it can (decode, preprocess,
   infer, decide, snapshot, outbox write, publish to a real mosquitto when one is installed),
   same backend, threads and batch. Every verdict is made a mismatch (thresholds 1.0), so every
   frame takes the full alert path: the worst case for delivery. frames/s from the agent's own
   verdict log (first to last verdict, so model loading and warm-up are not counted);
3. latency: the pipeline again, paced at ``--paced-fraction`` of the bare rate; frame-to-broker
   latency = when the subscriber received the alert minus the frame's capture time (``frame_ts``).

Prints the ratio pipeline / bare (goal >= 0.9) and the latency p50/p99.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the checkout's packages (and tests.broker) before anything in bench/


def build_resnet_bundle(out: Path, size: int, arch: str = "resnet18", int8: bool = True) -> Path:
    """An (untrained) torchvision ResNet exported to ONNX in a bundle folder, FP32 and (``int8``) the
    INT8 CPU model: the compute the agent runs for real, without waiting for a training run."""
    import torch

    from contract.card import Artifact, InputSpec, ModelCard, ModelSpec, OutputSpec, save_card
    from contract.files import sha256_file
    from export.onnx_export import export_model
    from training.model import build_model

    torch.manual_seed(0)
    card = ModelCard(
        name=f"bench-{arch}",
        version=1,
        model=ModelSpec(arch=arch, num_classes=6),
        input=InputSpec(height=size, width=size),
        output=OutputSpec(counts=[0, 1, 2, 3, 4, 5], overflow=True),
    )
    out.mkdir(parents=True, exist_ok=True)
    model = build_model(arch, 6).eval()
    onnx_path = export_model(model, card, out / "model.fp32.onnx")
    card.artifacts.append(
        Artifact(
            kind="onnx", file=onnx_path.name, sha256=sha256_file(onnx_path), precision="fp32", target="any"
        )
    )
    if int8:  # what the agent ships on a CPU: precision auto picks the INT8 CPU model
        q = _quantize_cpu(onnx_path, out / "model.int8-cpu.onnx", size, card.input.name)
        card.artifacts.append(
            Artifact(kind="onnx", file=q.name, sha256=sha256_file(q), precision="int8", target="cpu")
        )
    save_card(card, out)
    return out


def _quantize_cpu(fp32: Path, out: Path, size: int, input_name: str, n: int = 8) -> Path:
    """The INT8 CPU model (export's settings), calibrated on a few random images (speed only)."""
    from export.quantize import preprocess_for_quant, quantize_onnx

    rng = np.random.default_rng(0)
    batches = [{input_name: rng.standard_normal((1, 3, size, size)).astype(np.float32)} for _ in range(n)]

    class _Reader:
        def get_next(self) -> Optional[dict[str, np.ndarray]]:
            return batches.pop() if batches else None

    pre = preprocess_for_quant(fp32, out.with_suffix(".pre.onnx"))
    quantize_onnx(pre, out, _Reader(), "cpu")
    pre.unlink(missing_ok=True)
    return out


def synth_bins(out: Path, count: int) -> Path:
    from training.data.synth import synthesize

    synthesize(out, count, 5, seed=3, size=(320, 240), progress=False)
    return out


def measure_bare(bundle: Path, data: Path, threads: int, batch: int, precision: str) -> dict:
    from agent.inference.backends.onnxruntime_backend import OnnxRuntimeBackend
    from agent.inference.preprocess import preprocess
    from agent.intake.decode import decode_jpeg
    from contract.abid import iter_dataset
    from contract.card import load_card

    card = load_card(bundle)
    backend = OnnxRuntimeBackend(precision=precision, threads=threads, inter_threads=1)
    backend.load(bundle, card)
    backend.warmup(3)
    x = np.stack([preprocess(decode_jpeg(it.image.read_bytes()), card.input) for it in iter_dataset(data)])
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        backend.infer(x[i : i + batch])
    fps = len(x) / (time.perf_counter() - t0)
    backend.close()
    return {
        "fps": fps,
        "frames": len(x),
        "precision": backend.precision,
        "file": backend.model_file.name,
    }


class _Subscriber:
    def __init__(self, url: str, topic: str) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        host, port = url.split("://", 1)[1].rsplit(":", 1)
        self.received: list[tuple[float, bytes]] = []
        self.ready = threading.Event()
        self.c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"bench-{time.time_ns()}")
        self.c.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1)
        self.c.on_subscribe = lambda *a: self.ready.set()
        self.c.on_message = lambda c, u, m: self.received.append((time.time(), bytes(m.payload)))
        self.c.connect(host, int(port))
        self.c.loop_start()
        if not self.ready.wait(10):
            raise RuntimeError(f"cannot subscribe at {url}")

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


def run_pipeline(
    bundle: Path,
    data: Path,
    threads: int,
    batch: int,
    precision: str,
    broker: str,
    work: Path,
    rate: Optional[float] = None,
) -> dict:
    from agent.config import AgentConfig
    from agent.delivery.records import read_verdicts
    from agent.runtime import Runtime

    state = work / f"state-{time.time_ns()}"
    cfg = AgentConfig.model_validate(
        {
            "agent": {"site": "bench", "device": "d1", "state_dir": str(state)},
            "mqtt": {"broker": broker, "stop_drain_s": 30, "stats_interval_s": 5},
            "cameras": [{"name": "replay", "source": str(data), "kind": "replay", "replay_rate": rate}],
            "model": {
                "bundle": str(bundle),
                "backend": "onnxruntime",
                "precision": precision,
                "threads": threads,
                "inter_threads": 1,
                "batch": batch,
            },
            # every verdict becomes an alert: the whole delivery path for every frame
            "decision": {"mismatch_threshold": 1.0, "match_threshold": 1.0},
            "snapshots": {"enabled": True},
            "http": {"enabled": False},
        }
    )
    sub = _Subscriber(broker, "binwatch/v1/bench/d1/alert/mismatch") if broker else None
    rt = Runtime(cfg, exit_when_done=True)
    rt.start()
    t_start = time.time()
    rt.run()
    verdicts = read_verdicts(state / "verdicts.jsonl")
    ts = sorted(v["ts"] for v in verdicts)
    fps = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 else 0.0
    out: dict[str, Any] = {
        "fps": fps,
        "frames": len(verdicts),
        "wall_s": time.time() - t_start,
        "alerts": sum(v["verdict"] == "mismatch" for v in verdicts),
    }
    lat = rt.metrics.latency()
    out["stages_ms"] = {k: {"p50": round(v[0] * 1e3, 2), "p99": round(v[1] * 1e3, 2)} for k, v in lat.items()}
    if sub is not None:
        deadline = time.time() + 30
        while len(sub.received) < out["alerts"] and time.time() < deadline:
            time.sleep(0.05)
        sub.close()
        lats = []
        for t_recv, payload in sub.received:
            a = json.loads(payload)
            lats.append(t_recv - datetime.fromisoformat(a["frame_ts"].replace("Z", "+00:00")).timestamp())
        out["delivered"] = len(sub.received)
        if lats:
            out["frame_to_broker_ms"] = {
                "p50": float(np.percentile(lats, 50) * 1e3),
                "p99": float(np.percentile(lats, 99) * 1e3),
            }
    shutil.rmtree(state, ignore_errors=True)
    return out


def _parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", type=Path, help="bundle folder (default: untrained ResNet18, FP32 + INT8 CPU)")
    ap.add_argument("--replay", type=Path, help="ABID-layout folder (default: synthetic bins)")
    ap.add_argument("--count", type=int, default=200, help="synthetic bins when --replay is not given")
    ap.add_argument("--size", type=int, default=224, help="model input size for the default model")
    ap.add_argument("--threads", type=int, default=2, help="inference intra-op threads (both runs)")
    ap.add_argument("--batch", type=int, default=4, help="most frames per inference (both runs)")
    ap.add_argument(
        "--precision", default="auto", help="auto (INT8 CPU when the bundle has it, as shipped) | fp32 | int8"
    )
    ap.add_argument("--broker", help="mqtt://host:port (default: start mosquitto if installed)")
    ap.add_argument("--paced-fraction", type=float, default=0.5, help="latency run rate / bare rate")
    ap.add_argument("--rounds", type=int, default=2, help="bare/pipeline pairs, interleaved (medians count)")
    ap.add_argument("--paced-frames", type=int, default=60, help="frames in the paced latency run")
    ap.add_argument("--json", action="store_true", help="print JSON")
    return ap


def _start_broker(work: Path) -> tuple[str, Any]:
    """A mosquitto for the run (``(url, process)``), or an unreachable URL when none is installed."""
    try:
        from tests.broker import Mosquitto

        proc = Mosquitto(work / "broker")
        proc.start()
        return proc.url, proc
    except RuntimeError as e:
        print(f"no mosquitto ({e}); the pipeline runs without a broker (alerts stay in the outbox)")
        return "mqtt://127.0.0.1:9", None


def _measure(args: argparse.Namespace, bundle: Path, data: Path, broker: str, work: Path) -> dict:
    """Interleaved bare/pipeline rounds (so that load from other processes hits both sides alike),
    then a paced run for latency."""
    bares, pipes = [], []
    for r in range(args.rounds):
        bares.append(measure_bare(bundle, data, args.threads, args.batch, args.precision))
        pipes.append(run_pipeline(bundle, data, args.threads, args.batch, args.precision, broker, work))
        print(
            f"round {r + 1}: bare {bares[-1]['fps']:.2f}, pipeline {pipes[-1]['fps']:.2f} frames/s",
            file=sys.stderr,
        )
    bare = dict(bares[0], fps=float(np.median([b["fps"] for b in bares])))
    pipe = dict(pipes[-1], fps=float(np.median([p["fps"] for p in pipes])))
    subset = work / "paced-bins"
    _subset(data, subset, args.paced_frames)
    rate = paced_rate(bare, args)
    paced = run_pipeline(bundle, subset, args.threads, args.batch, args.precision, broker, work, rate=rate)
    return {
        "model": str(bundle),
        "frames": bare["frames"],
        "threads": args.threads,
        "batch": args.batch,
        "precision": bare["precision"],
        "bare_fps": round(bare["fps"], 2),
        "pipeline_fps": round(pipe["fps"], 2),
        "ratio": round(pipe["fps"] / bare["fps"], 3),
        "rounds": [
            {"bare_fps": round(b["fps"], 2), "pipeline_fps": round(p["fps"], 2)}
            for b, p in zip(bares, pipes, strict=True)
        ],
        "pipeline": pipe,
        "paced": paced,
        "paced_rate": rate,
        "bare": bare,
        "broker": broker,
    }


def _print(result: dict, args: argparse.Namespace) -> None:
    bare, pipe, paced = result["bare"], result["pipeline"], result["paced"]
    print(
        f"model {Path(result['model']).name} ({bare['file']}, {bare['precision']}), {bare['frames']} frames, "
        f"threads {args.threads}, batch {args.batch}, broker {result['broker']}"
    )
    print(f"  bare backend     {bare['fps']:8.1f} frames/s")
    print(f"  agent pipeline   {pipe['fps']:8.1f} frames/s   ratio {result['ratio']:.3f} (goal >= 0.9)")
    print(f"  alerts stored {pipe['alerts']}, delivered {pipe.get('delivered', 'n/a')}")
    for name, run in (("saturated", pipe), (f"paced at {result['paced_rate']:.1f}/s", paced)):
        f2b = run.get("frame_to_broker_ms")
        if f2b:
            print(f"  frame-to-broker ({name}): p50 {f2b['p50']:.1f} ms, p99 {f2b['p99']:.1f} ms")
    print(
        "  stages (paced, ms): "
        + ", ".join(f"{k} p50 {v['p50']}/p99 {v['p99']}" for k, v in paced["stages_ms"].items())
    )


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="bench-agent-"))
    broker_proc = None
    try:
        bundle = args.model or build_resnet_bundle(work / "bundle", args.size)
        data = args.replay or synth_bins(work / "bins", args.count)
        broker = args.broker
        if broker is None:
            broker, broker_proc = _start_broker(work)
        result = _measure(args, bundle, data, broker, work)
        if args.json:
            print(json.dumps({k: v for k, v in result.items() if k not in ("bare", "paced_rate")}, indent=2))
        else:
            _print(result, args)
        return 0
    finally:
        if broker_proc is not None:
            broker_proc.stop()
        shutil.rmtree(work, ignore_errors=True)


def _subset(src: Path, dst: Path, n: int) -> None:
    from contract.abid import IMAGES_DIR, METADATA_DIR, list_keys

    (dst / IMAGES_DIR).mkdir(parents=True)
    (dst / METADATA_DIR).mkdir()
    for key in list_keys(src)[:n]:
        for sub, suffix in ((IMAGES_DIR, ".jpg"), (METADATA_DIR, ".json")):
            f = src / sub / f"{key}{suffix}"
            if f.exists():
                shutil.copy(f, dst / sub / f.name)


def paced_rate(bare: dict, args: argparse.Namespace) -> float:
    return max(0.5, bare["fps"] * args.paced_fraction)


if __name__ == "__main__":
    raise SystemExit(main())
